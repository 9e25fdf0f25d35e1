package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type runnerService struct{ s *Server }

func requireOwner(ctx context.Context) (store.User, error) {
	u, err := userFrom(ctx)
	if err != nil {
		return u, err
	}
	if u.Role != store.RoleOwner {
		return u, connect.NewError(connect.CodePermissionDenied, errors.New("only organization owners may do this"))
	}
	return u, nil
}

func (r *runnerService) CreateJoinToken(ctx context.Context, req *connect.Request[covev1.CreateJoinTokenRequest]) (*connect.Response[covev1.CreateJoinTokenResponse], error) {
	u, err := requireOwner(ctx)
	if err != nil {
		return nil, err
	}
	exp, err := r.s.joinTokenExpiry(tokenFrom(ctx), req.Msg.GetTtlSeconds())
	if err != nil {
		return nil, err
	}
	tok, err := r.s.CreateJoinToken(ctx, u.ID, exp.Sub(r.s.now()))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&covev1.CreateJoinTokenResponse{JoinToken: tok}), nil
}

// Join tokens last an hour unless asked otherwise, at most a week, and
// never longer than the token asking for one.
const (
	defaultJoinTokenTTL = time.Hour
	maxJoinTokenTTL     = 7 * 24 * time.Hour
)

func (s *Server) joinTokenExpiry(parent *store.Token, ttlSeconds int64) (time.Time, error) {
	if ttlSeconds < 0 || ttlSeconds > int64(maxJoinTokenTTL/time.Second) {
		return time.Time{}, invalidField("ttlSeconds", "%d is out of range: 1-%d seconds (%s), or 0 for %s",
			ttlSeconds, int64(maxJoinTokenTTL/time.Second), maxJoinTokenTTL, defaultJoinTokenTTL)
	}
	now := s.now()
	exp := now.Add(defaultJoinTokenTTL)
	if ttlSeconds > 0 {
		exp = now.Add(time.Duration(ttlSeconds) * time.Second)
	}
	if parent == nil || parent.ExpiresAt.IsZero() || !exp.After(parent.ExpiresAt) {
		return exp, nil
	}
	if ttlSeconds == 0 {
		return parent.ExpiresAt, nil
	}
	return time.Time{}, invalidField("ttlSeconds", "a join token cannot outlive the token that creates it, and yours expires at %s: ask for at most %d seconds",
		parent.ExpiresAt.UTC().Format(time.RFC3339), max(int64(parent.ExpiresAt.Sub(now)/time.Second), 0))
}

// CreateJoinToken makes a one-time runner join token.
func (s *Server) CreateJoinToken(ctx context.Context, createdBy string, ttl time.Duration) (string, error) {
	tok := NewToken(prefixJoinToken)
	err := s.store.CreateJoinToken(ctx, store.JoinToken{Hash: HashToken(tok), CreatedBy: createdBy, ExpiresAt: s.now().Add(ttl)})
	return tok, err
}

func (r *runnerService) JoinRunner(ctx context.Context, req *connect.Request[covev1.JoinRunnerRequest]) (*connect.Response[covev1.JoinRunnerResponse], error) {
	name := req.Msg.GetName()
	if !runnerNameRE.MatchString(name) {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("runner name is required: letters, digits, '.', '_' and '-' (a host name)"))
	}
	id := newID("r-")
	tok := NewToken(prefixRunnerToken)
	now := r.s.now()
	err := r.s.store.JoinRunner(ctx, HashToken(req.Msg.GetJoinToken()), store.Runner{ID: id, Name: name, TokenHash: HashToken(tok),
		Phase: covev1.RunnerPhase_RUNNER_PHASE_INACTIVE, Capabilities: &covev1.RunnerCapabilities{}, CreatedAt: now}, now)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("join token is invalid, expired or already used"))
	}
	if err != nil {
		return nil, err
	}
	r.s.log.Info("runner joined", "runner", id, "name", name)
	return connect.NewResponse(&covev1.JoinRunnerResponse{RunnerId: id, RunnerToken: tok}), nil
}

func (r *runnerService) ListRunners(ctx context.Context, _ *connect.Request[covev1.ListRunnersRequest]) (*connect.Response[covev1.ListRunnersResponse], error) {
	if _, err := userFrom(ctx); err != nil {
		return nil, err
	}
	runners, err := r.s.store.ListRunners(ctx)
	if err != nil {
		return nil, err
	}
	load, err := r.s.runnerLoad(ctx)
	if err != nil {
		return nil, err
	}
	out := &covev1.ListRunnersResponse{}
	for _, rn := range runners {
		out.Runners = append(out.Runners, &covev1.Runner{Id: rn.ID, Name: rn.Name, Phase: rn.Phase, Capabilities: rn.Capabilities,
			LastSeen: timestamppb.New(rn.LastSeen), Environments: int32(load[rn.ID])})
	}
	return connect.NewResponse(out), nil
}

func (r *runnerService) ListEnvironmentClasses(ctx context.Context, _ *connect.Request[covev1.ListEnvironmentClassesRequest]) (*connect.Response[covev1.ListEnvironmentClassesResponse], error) {
	if _, err := userFrom(ctx); err != nil {
		return nil, err
	}
	runners, err := r.s.store.ListRunners(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]*covev1.EnvironmentClass{}
	for _, rn := range runners {
		if rn.Phase != covev1.RunnerPhase_RUNNER_PHASE_ACTIVE {
			continue
		}
		for _, c := range rn.Capabilities.GetClasses() {
			if _, ok := seen[c.GetId()]; !ok {
				seen[c.GetId()] = c
			}
		}
	}
	out := &covev1.ListEnvironmentClassesResponse{}
	for _, c := range seen {
		out.Classes = append(out.Classes, c)
	}
	sort.Slice(out.Classes, func(i, j int) bool { return out.Classes[i].Id < out.Classes[j].Id })
	return connect.NewResponse(out), nil
}

func (r *runnerService) Heartbeat(ctx context.Context, req *connect.Request[covev1.HeartbeatRequest]) (*connect.Response[covev1.HeartbeatResponse], error) {
	rn, err := runnerFrom(ctx)
	if err != nil {
		return nil, err
	}
	caps, err := r.s.checkCapabilities(req.Msg.GetCapabilities())
	if err != nil {
		r.s.log.Warn("runner capabilities refused", "runner", rn.ID, "name", rn.Name, "err", err)
		return nil, err
	}
	rn.Capabilities = caps
	rn.LastSeen = r.s.now()
	rn.Phase = covev1.RunnerPhase_RUNNER_PHASE_ACTIVE
	// Whether it was lost is decided where the heartbeat is written: the
	// liveness pass may mark it INACTIVE between reading rn and now.
	wasInactive, err := r.s.store.TouchRunner(ctx, rn.ID, caps, rn.LastSeen)
	if err != nil {
		return nil, err
	}
	if wasInactive {
		r.s.log.Info("runner active", "runner", rn.ID, "name", rn.Name)
		if err := r.s.clearRunnerLost(ctx, rn); err != nil {
			return nil, err
		}
	}
	resp := &covev1.HeartbeatResponse{UserCa: r.s.userCA.AuthorizedKey(),
		HeartbeatIntervalSeconds: max(1, int64(r.s.cfg.RunnerTimeout/time.Second)/4)}
	if k := req.Msg.GetHostPublicKey(); k != "" {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("host public key: %w", err))
		}
		cert, err := r.s.hostCA.SignHostCert(pub, 24*time.Hour)
		if err != nil {
			return nil, fmt.Errorf("sign host certificate: %w", err)
		}
		resp.HostCertificate = string(ssh.MarshalAuthorizedKey(cert))
	}
	return connect.NewResponse(resp), nil
}

func (r *runnerService) WatchAssignments(ctx context.Context, req *connect.Request[covev1.WatchAssignmentsRequest], stream *connect.ServerStream[covev1.WatchAssignmentsResponse]) error {
	rn, err := runnerFrom(ctx)
	if err != nil {
		return err
	}
	release, ok := r.s.streams.acquire("runner:"+rn.ID, maxRunnerWatches)
	if !ok {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("runner %s has %d assignment watches open already", rn.Name, maxRunnerWatches))
	}
	defer release()
	if err := stream.Send(nil); err != nil {
		return err
	}
	send := func(env *covev1.Environment) error {
		return stream.Send(&covev1.WatchAssignmentsResponse{Environment: env})
	}
	// Environments that left this runner follow each round (releases.go).
	sent := map[string]bool{}
	return r.s.watchWith(ctx, store.EnvironmentFilter{RunnerID: rn.ID}, req.Msg.GetSinceRevision(), send, func() error {
		return r.s.sendReleases(ctx, rn.ID, sent, send)
	})
}

func (r *runnerService) ReportStatus(ctx context.Context, req *connect.Request[covev1.ReportStatusRequest]) (*connect.Response[covev1.ReportStatusResponse], error) {
	rn, err := runnerFrom(ctx)
	if err != nil {
		return nil, err
	}
	st := req.Msg.GetStatus()
	if st == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("status is required"))
	}
	if _, known := covev1.EnvironmentPhase_name[int32(st.GetPhase())]; !known {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("status.phase: unknown phase %d", int32(st.GetPhase())))
	}
	sanitizeStatus(st)
	clampActivity(st, r.s.now()) // autostop.go
	st.ClassCaps = nil           // the server's to fill in for users, never the runner's
	if released, ok, err := r.s.releasedReport(ctx, rn, req.Msg.GetEnvironmentId(), st); ok || err != nil {
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(&covev1.ReportStatusResponse{Environment: released}), nil // releases.go
	}
	at, restored := r.s.now(), ""
	env, err := r.s.store.UpdateEnvironment(ctx, req.Msg.GetEnvironmentId(), func(env *covev1.Environment) error {
		if env.GetMetadata().GetRunnerId() != rn.ID {
			return connect.NewError(connect.CodePermissionDenied, errors.New("environment is not assigned to this runner"))
		}
		if env.GetStatus().GetPhase() == phaseDeleted {
			return connect.NewError(connect.CodeFailedPrecondition, errors.New("environment is deleted"))
		}
		prev := env.GetStatus()
		st.StatusVersion = prev.GetStatusVersion() + 1
		if st.Phase == phaseRunning && prev.GetPhase() != phaseRunning {
			env.Metadata.StartedAt = timestamppb.New(r.s.now())
		}
		if st.Phase == phaseRunning && env.GetMetadata().GetRunStartedAt() == nil {
			// The first RUNNING after a user's start, restore or move
			// (which clear it): the run's auto-stop clock starts. A
			// runner restarting a crashed container does not restart
			// it (review REV-6).
			env.Metadata.RunStartedAt = timestamppb.New(r.s.now())
		}
		keepServerStatus(env, st) // backups.go
		// A restore done: its backup becomes the latest (restoresource.go).
		restored = restoredNow(env, prev, st)
		env.Status = st
		return nil
	})
	if err != nil {
		return nil, err
	}
	if restored != "" {
		if err := r.s.setRestoredBackup(ctx, env.Id, restored, at); err != nil {
			r.s.log.Error("could not record the restored backup as the latest", "env", env.Id, "backup", restored, "err", err)
		}
	}
	return connect.NewResponse(&covev1.ReportStatusResponse{Environment: env}), nil
}
