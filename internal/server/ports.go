package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/store"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

const (
	visPrivate = covev1.PortVisibility_PORT_VISIBILITY_PRIVATE
	visOrg     = covev1.PortVisibility_PORT_VISIBILITY_ORGANIZATION
	visPublic  = covev1.PortVisibility_PORT_VISIBILITY_PUBLIC

	// How long a runner may cache an allowed port access decision.
	portAccessCache = 30 * time.Second
)

func validPort(p int32) error {
	if p < 1 || p > 65535 {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid port %d: must be 1-65535", p))
	}
	return nil
}

// SharePort sets who may reach a port through the runner's HTTP proxy.
// Private is the default, so sharing a port as private removes its entry.
func (e *envService) SharePort(ctx context.Context, req *connect.Request[covev1.SharePortRequest]) (*connect.Response[covev1.SharePortResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	port := req.Msg.GetPort()
	if err := validPort(port); err != nil {
		return nil, err
	}
	vis := req.Msg.GetVisibility()
	switch vis {
	case covev1.PortVisibility_PORT_VISIBILITY_UNSPECIFIED, visPrivate, visOrg, visPublic:
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid visibility %s", vis))
	}
	env, err := e.s.lookup(ctx, u, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	env, err = e.s.store.UpdateEnvironment(ctx, env.Id, func(env *covev1.Environment) error {
		if env.GetSpec().GetDesiredPhase() == phaseDeleted {
			return usererr.New("environment %q is being deleted", env.GetMetadata().GetName())
		}
		var ports []*covev1.PortSpec
		for _, p := range env.Spec.Ports {
			if p.GetPort() != port {
				ports = append(ports, p)
			}
		}
		if vis == visOrg || vis == visPublic {
			ports = append(ports, &covev1.PortSpec{Port: port, Visibility: vis})
		}
		sort.Slice(ports, func(i, j int) bool { return ports[i].Port < ports[j].Port })
		env.Spec.Ports = ports
		env.Spec.SpecVersion++
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.s.log.Info("port shared", "env", env.Id, "port", port, "visibility", visibilityName(vis), "user", u.Name)
	return connect.NewResponse(&covev1.SharePortResponse{Environment: env}), nil
}

// portVisibility is the sharing level of port in spec (private unless listed).
func portVisibility(spec *covev1.EnvironmentSpec, port int) covev1.PortVisibility {
	for _, p := range spec.GetPorts() {
		if int(p.GetPort()) == port {
			if p.GetVisibility() == covev1.PortVisibility_PORT_VISIBILITY_UNSPECIFIED {
				return visPrivate
			}
			return p.GetVisibility()
		}
	}
	return visPrivate
}

func visibilityName(v covev1.PortVisibility) string {
	return strings.ToLower(strings.TrimPrefix(v.String(), "PORT_VISIBILITY_"))
}

// userMayAccess applies the sharing rules to a known user (nil: anonymous).
func userMayAccess(env *covev1.Environment, port int, u *store.User) (bool, string) {
	switch vis := portVisibility(env.GetSpec(), port); {
	case vis == visPublic:
		return true, ""
	case u == nil:
		return false, "login required"
	case vis == visOrg:
		if u.OrganizationID == env.GetMetadata().GetOrganizationId() {
			return true, ""
		}
		return false, fmt.Sprintf("port %d is shared with the environment's organization only", port)
	default:
		if u.ID == env.GetMetadata().GetOwnerId() {
			return true, ""
		}
		return false, fmt.Sprintf("port %d is private to the environment's owner", port)
	}
}

// portDecision is the answer to one port access question.
type portDecision struct {
	allowed  bool
	userID   string
	reason   string
	cacheFor time.Duration
}

// decidePortAccess authorizes a request carrying tok (a personal access
// token, a port session token or nothing) to port of env.
func (s *Server) decidePortAccess(ctx context.Context, env *covev1.Environment, port int, tok string) (portDecision, error) {
	if env.GetSpec().GetDesiredPhase() == phaseDeleted {
		return portDecision{reason: "environment is being deleted"}, nil
	}
	cacheFor := portAccessCache
	var user *store.User
	badToken := false
	switch {
	case tok == "":
	case strings.HasPrefix(tok, PrefixPortToken):
		uid, exp, err := s.verifyPortToken(tok, env.Id, port)
		if err != nil {
			badToken = true
			break
		}
		u, err := s.store.GetUser(ctx, uid)
		if errors.Is(err, store.ErrNotFound) {
			badToken = true
			break
		}
		if err != nil {
			return portDecision{}, err
		}
		user = &u
		cacheFor = min(cacheFor, exp.Sub(s.now()))
	case strings.HasPrefix(tok, prefixUserToken):
		p, err := s.resolveToken(ctx, tok)
		if errors.Is(err, store.ErrNotFound) || (err == nil && p.user == nil) {
			badToken = true
			break
		}
		if err != nil {
			return portDecision{}, err
		}
		user = p.user
	default:
		badToken = true
	}
	ok, reason := userMayAccess(env, port, user)
	if !ok {
		if badToken {
			reason = "invalid or expired token"
		}
		return portDecision{reason: reason}, nil
	}
	d := portDecision{allowed: true, cacheFor: max(cacheFor, 0)}
	if user != nil {
		d.userID = user.ID
	}
	return d, nil
}

// AuthorizePortAccess answers a runner's port proxy: may a request carrying
// this token reach this port of an environment assigned to the runner?
func (r *runnerService) AuthorizePortAccess(ctx context.Context, req *connect.Request[covev1.AuthorizePortAccessRequest]) (*connect.Response[covev1.AuthorizePortAccessResponse], error) {
	rn, err := runnerFrom(ctx)
	if err != nil {
		return nil, err
	}
	if err := validPort(req.Msg.GetPort()); err != nil {
		return nil, err
	}
	env, err := r.s.store.GetEnvironment(ctx, req.Msg.GetEnvironmentId())
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if err != nil || env.GetMetadata().GetRunnerId() != rn.ID {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("environment is not assigned to this runner"))
	}
	d, err := r.s.decidePortAccess(ctx, env, int(req.Msg.GetPort()), req.Msg.GetToken())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&covev1.AuthorizePortAccessResponse{Allowed: d.allowed, UserId: d.userID, Reason: d.reason,
		CacheSeconds: int64(d.cacheFor / time.Second)}), nil
}
