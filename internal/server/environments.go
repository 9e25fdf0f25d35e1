package server

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/content"
	"github.com/covedev/cove/internal/store"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	phaseCreating = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_CREATING
	phaseRunning  = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING
	phaseStopped  = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED
	phaseDeleted  = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED
)

// Names are DNS labels: they become host names (NAME.cove).
var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

type envService struct{ s *Server }

func (e *envService) CreateEnvironment(ctx context.Context, req *connect.Request[covev1.CreateEnvironmentRequest]) (*connect.Response[covev1.CreateEnvironmentResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	name := req.Msg.GetName()
	if !nameRE.MatchString(name) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid name %q: use lower-case letters, digits and '-' (at most 63)", name))
	}
	spec := req.Msg.GetSpec()
	if spec == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("spec is required (at least spec.content.gitUrl)"))
	}
	if spec.ClassId == "" {
		spec.ClassId = e.s.cfg.DefaultClass
	}
	switch spec.DesiredPhase {
	case covev1.EnvironmentPhase_ENVIRONMENT_PHASE_UNSPECIFIED:
		spec.DesiredPhase = phaseRunning
	case phaseRunning, phaseStopped:
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("spec.desiredPhase must be RUNNING or STOPPED, not %s", spec.DesiredPhase))
	}
	if err := e.s.validateSpec(ctx, u, spec); err != nil {
		return nil, err
	}
	if err := e.s.applyTimeouts(ctx, spec); err != nil { // autostop.go
		return nil, err
	}
	spec.SpecVersion = 1
	e.s.quotaMu.Lock()
	created, err := e.s.createEnvironment(ctx, u, name, spec)
	e.s.quotaMu.Unlock()
	if err != nil {
		return nil, err
	}
	if sched, err := e.s.schedule(ctx, created); err == nil {
		created = sched
	} else {
		e.s.log.Error("schedule", "env", created.Id, "err", err)
	}
	e.s.log.Info("environment created", "env", created.Id, "name", name, "owner", u.Name, "runner", created.GetMetadata().GetRunnerId())
	return connect.NewResponse(&covev1.CreateEnvironmentResponse{Environment: created}), nil
}

// createEnvironment stores a new environment for u if u has room for it.
// The caller holds quotaMu.
func (s *Server) createEnvironment(ctx context.Context, u store.User, name string, spec *covev1.EnvironmentSpec) (*covev1.Environment, error) {
	if err := s.checkUserCapacity(ctx, u, "", spec.GetDesiredPhase() == phaseRunning); err != nil {
		return nil, err
	}
	id := newID("")
	now := timestamppb.New(s.now())
	env := &covev1.Environment{
		Id:       id,
		Metadata: &covev1.EnvironmentMetadata{Id: id, OrganizationId: u.OrganizationID, OwnerId: u.ID, Name: name, CreatedAt: now},
		Spec:     spec,
		Status: &covev1.EnvironmentStatus{
			Phase:   phaseCreating,
			Content: &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_PENDING},
			Machine: &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_PENDING},
		},
	}
	created, err := s.store.CreateEnvironment(ctx, env)
	if errors.Is(err, store.ErrAlreadyExists) {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("you already have an environment named %q", name))
	}
	return created, err
}

// checkSource applies the runner's own classification of content sources
// (content.ClassifySource): a runner reads local paths as root, so only
// owners (the operator of a `cove up`) may name one, and runners refuse them
// unless allowed. A source that is local once surrounding white space is
// trimmed gets the same answer, so the refusal does not depend on spelling.
func checkSource(u store.User, src string) error {
	local, err := content.ClassifySource(src)
	if !local {
		local, _ = content.ClassifySource(strings.TrimSpace(src))
	}
	if local && u.Role != store.RoleOwner {
		return connect.NewError(connect.CodePermissionDenied, errors.New("only organization owners may create environments from a local path; use a git URL"))
	}
	if err != nil {
		msg, ok := usererr.Message(err)
		if !ok {
			msg = err.Error()
		}
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("spec.content.gitUrl: %s", msg))
	}
	return nil
}

// lookup finds the caller's environment by id or name. Other users'
// environments are reported as not found.
func (s *Server) lookup(ctx context.Context, u store.User, idOrName string) (*covev1.Environment, error) {
	env, err := s.store.GetEnvironment(ctx, idOrName)
	if err == nil && env.GetMetadata().GetOwnerId() == u.ID {
		return env, nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	env, err = s.store.GetEnvironmentByName(ctx, u.ID, idOrName)
	if errors.Is(err, store.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("environment %q not found", idOrName))
	}
	return env, err
}

func (e *envService) GetEnvironment(ctx context.Context, req *connect.Request[covev1.GetEnvironmentRequest]) (*connect.Response[covev1.GetEnvironmentResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	env, err := e.s.lookup(ctx, u, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	if env, err = e.s.withClassCaps(ctx, env); err != nil { // autostop.go
		return nil, err
	}
	return connect.NewResponse(&covev1.GetEnvironmentResponse{Environment: env}), nil
}

func (e *envService) ListEnvironments(ctx context.Context, req *connect.Request[covev1.ListEnvironmentsRequest]) (*connect.Response[covev1.ListEnvironmentsResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	envs, err := e.s.store.ListEnvironments(ctx, store.EnvironmentFilter{OwnerID: u.ID, IncludeDeleted: req.Msg.GetIncludeDeleted()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&covev1.ListEnvironmentsResponse{Environments: envs}), nil
}

func (e *envService) UpdateEnvironment(ctx context.Context, req *connect.Request[covev1.UpdateEnvironmentRequest]) (*connect.Response[covev1.UpdateEnvironmentResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	want := req.Msg.GetDesiredPhase()
	if want != phaseRunning && want != phaseStopped {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("desiredPhase must be RUNNING or STOPPED, not %s", want))
	}
	env, err := e.s.lookup(ctx, u, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	e.s.quotaMu.Lock()
	defer e.s.quotaMu.Unlock()
	if want == phaseRunning && !occupies(env) {
		if err := e.s.checkUserCapacity(ctx, u, env.Id, true); err != nil {
			return nil, err
		}
	}
	if moved, done, err := e.s.moveOnUpdate(ctx, u, env, req.Msg.GetRunnerId(), want); err != nil || done { // moves.go
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(&covev1.UpdateEnvironmentResponse{Environment: moved}), nil
	}
	env, err = e.s.setDesiredPhase(ctx, env.Id, want)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&covev1.UpdateEnvironmentResponse{Environment: env}), nil
}

func (e *envService) DeleteEnvironment(ctx context.Context, req *connect.Request[covev1.DeleteEnvironmentRequest]) (*connect.Response[covev1.DeleteEnvironmentResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	env, err := e.s.lookup(ctx, u, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	env, err = e.s.setDesiredPhase(ctx, env.Id, phaseDeleted)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&covev1.DeleteEnvironmentResponse{Environment: env}), nil
}

// setDesiredPhase changes the spec (bumping specVersion) so the runner acts
// again, even if the desired phase is unchanged: `cove env start` retries a
// failed start this way.
func (s *Server) setDesiredPhase(ctx context.Context, id string, want covev1.EnvironmentPhase) (*covev1.Environment, error) {
	return s.store.UpdateEnvironment(ctx, id, func(env *covev1.Environment) error {
		if env.GetSpec().GetDesiredPhase() == phaseDeleted {
			return usererr.New("environment %q is being deleted", env.GetMetadata().GetName())
		}
		if want == phaseRunning && env.Metadata != nil &&
			(env.GetSpec().GetDesiredPhase() != phaseRunning || env.GetStatus().GetPhase() != phaseRunning) {
			// A user's start (or retry of a failed one) is a new run: its
			// auto-stop clock starts at its next RUNNING (ReportStatus).
			env.Metadata.RunStartedAt = nil
		}
		env.Spec.DesiredPhase = want
		env.Spec.SpecVersion++
		env.Spec.StopReason = "" // a user asked: the server's reason is past
		if env.GetMetadata().GetRunnerId() == "" {
			// Nothing runs anywhere: the server completes the transition.
			switch want {
			case phaseDeleted:
				env.Status.Phase = phaseDeleted
			case phaseStopped:
				env.Status.Phase = phaseStopped
			}
			if want != phaseRunning {
				env.Status.FailureMessage = "" // nothing failed: nothing ran
			}
			env.Status.ObservedSpecVersion = env.Spec.SpecVersion
			env.Status.StatusVersion++
		}
		return nil
	})
}

func (e *envService) WatchEnvironments(ctx context.Context, req *connect.Request[covev1.WatchEnvironmentsRequest], stream *connect.ServerStream[covev1.WatchEnvironmentsResponse]) error {
	u, err := userFrom(ctx)
	if err != nil {
		return err
	}
	release, ok := e.s.streams.acquire("user:"+u.ID, e.s.cfg.Limits.WatchesPerUser)
	if !ok {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"you have %d watches open, the most this server allows per user: close some (other `cove env` waits, watches, browser tabs) and retry",
			e.s.cfg.Limits.WatchesPerUser))
	}
	defer release()
	only := ""
	if id := req.Msg.GetId(); id != "" {
		env, err := e.s.lookup(ctx, u, id)
		if err != nil {
			return err
		}
		only = env.Id
	}
	// Send headers now so the client's call returns before the first change.
	if err := stream.Send(nil); err != nil {
		return err
	}
	return e.s.watch(ctx, store.EnvironmentFilter{OwnerID: u.ID}, req.Msg.GetSinceRevision(), func(env *covev1.Environment) error {
		if only != "" && env.Id != only {
			return nil
		}
		return stream.Send(&covev1.WatchEnvironmentsResponse{Environment: env})
	})
}

// watch sends the matching environments' state from sinceRevision on (all
// live ones first when sinceRevision is 0), then every change, until ctx
// ends. Deleted environments are sent once with phase DELETED.
func (s *Server) watch(ctx context.Context, f store.EnvironmentFilter, since int64, send func(*covev1.Environment) error) error {
	return s.watchWith(ctx, f, since, send, nil)
}

// watchWith is watch that also calls pass, when not nil, after each round
// of changes sent (the first one included).
func (s *Server) watchWith(ctx context.Context, f store.EnvironmentFilter, since int64, send func(*covev1.Environment) error, pass func() error) error {
	changes := s.store.Changes(ctx)
	if since == 0 {
		rev, err := s.store.Revision(ctx)
		if err != nil {
			return err
		}
		envs, err := s.store.ListEnvironments(ctx, f)
		if err != nil {
			return err
		}
		for _, env := range envs {
			if err := send(env); err != nil {
				return err
			}
		}
		since = rev
	}
	f.IncludeDeleted = true
	poll := time.NewTicker(5 * time.Second) // also catches writes by other replicas
	defer poll.Stop()
	for {
		f.SinceRevision = since
		envs, err := s.store.ListEnvironments(ctx, f)
		if err != nil {
			return err
		}
		for _, env := range envs {
			if err := send(env); err != nil {
				return err
			}
			since = max(since, env.Revision)
		}
		if pass != nil {
			if err := pass(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-poll.C:
		}
	}
}

func (e *envService) SignSSHCertificate(ctx context.Context, req *connect.Request[covev1.SignSSHCertificateRequest]) (*connect.Response[covev1.SignSSHCertificateResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	env, err := e.s.lookup(ctx, u, req.Msg.GetEnvironmentId())
	if err != nil {
		return nil, err
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(req.Msg.GetPublicKey()))
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("public key: %w", err))
	}
	if _, isCert := pub.(*ssh.Certificate); isCert {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("public key must be a plain key, not a certificate"))
	}
	// A certificate does not outlive the token that asked for it.
	ttl := e.s.cfg.SSHCertTTL
	if t := tokenFrom(ctx); t != nil && !t.ExpiresAt.IsZero() {
		ttl = min(ttl, t.ExpiresAt.Sub(e.s.now()))
	}
	if ttl < time.Second {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("your token expires now: log in again"))
	}
	cert, err := e.s.userCA.SignUserCertNamed(pub, env.Id, u.ID, u.Name, ttl)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	e.s.log.Info("ssh certificate issued", "env", env.Id, "user", u.Name, "ttl", ttl)
	return connect.NewResponse(&covev1.SignSSHCertificateResponse{
		Certificate: string(ssh.MarshalAuthorizedKey(cert)),
		Ssh:         env.GetStatus().GetSsh(),
		HostCa:      e.s.hostCA.AuthorizedKey(),
		ExpiresAt:   timestamppb.New(time.Unix(int64(cert.ValidBefore), 0)),
	}), nil
}

func (e *envService) RebuildEnvironment(ctx context.Context, req *connect.Request[covev1.RebuildEnvironmentRequest]) (*connect.Response[covev1.RebuildEnvironmentResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	env, err := e.s.lookup(ctx, u, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	e.s.quotaMu.Lock()
	defer e.s.quotaMu.Unlock()
	if !occupies(env) {
		if err := e.s.checkUserCapacity(ctx, u, env.Id, true); err != nil {
			return nil, err
		}
	}
	env, err = e.s.store.UpdateEnvironment(ctx, env.Id, func(env *covev1.Environment) error {
		if env.GetSpec().GetDesiredPhase() == phaseDeleted {
			return usererr.New("environment %q is being deleted", env.GetMetadata().GetName())
		}
		// A rebuild ends running: the runner rebuilds, then starts it.
		env.Spec.DesiredPhase = phaseRunning
		env.Spec.StopReason = ""
		env.Spec.RebuildGeneration++
		env.Spec.SpecVersion++
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&covev1.RebuildEnvironmentResponse{Environment: env}), nil
}
