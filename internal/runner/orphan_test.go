package runner

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

// movedAwayServer answers a runner as the server does once the
// environment moved to another runner: with a release recorded for this
// runner, every report is accepted (and ignored; a DELETED one ends the
// release); without one, each is refused as not this runner's.
type movedAwayServer struct {
	covev1connect.UnimplementedRunnerServiceHandler
	mu       sync.Mutex
	released bool
	refused  int
	accepted []*covev1.EnvironmentStatus
}

func (s *movedAwayServer) release() {
	s.mu.Lock()
	s.released = true
	s.mu.Unlock()
}

// deleted: the runner reported its copy DELETED.
func (s *movedAwayServer) deleted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.accepted) > 0 && s.accepted[len(s.accepted)-1].GetPhase() == phaseDeleted
}

func (s *movedAwayServer) ReportStatus(_ context.Context, req *connect.Request[covev1.ReportStatusRequest]) (*connect.Response[covev1.ReportStatusResponse], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.released {
		s.refused++
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("environment is not assigned to this runner"))
	}
	s.accepted = append(s.accepted, req.Msg.GetStatus())
	return connect.NewResponse(&covev1.ReportStatusResponse{}), nil
}

func (s *movedAwayServer) counts() (refused, accepted int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused, len(s.accepted)
}

// movedAway points the world's runners at a movedAwayServer.
func (c *crashWorld) movedAway() *movedAwayServer {
	srv := &movedAwayServer{}
	path, h := covev1connect.NewRunnerServiceHandler(srv)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	hs := httptest.NewServer(mux)
	c.t.Cleanup(hs.Close)
	c.api = &client{api: covev1connect.NewRunnerServiceClient(hs.Client(), hs.URL)}
	return srv
}

func (r *Runner) hasWorker(id string) bool {
	return r.workerOf(id) != nil
}

// released is what the server's assignment watch sends a runner for an
// environment released from it (internal/server/releases.go).
func released(env *covev1.Environment) *covev1.Environment {
	return &covev1.Environment{Id: env.Id, Metadata: &covev1.EnvironmentMetadata{Name: env.GetMetadata().GetName(), RunnerId: "r1"},
		Spec: &covev1.EnvironmentSpec{DesiredPhase: phaseDeleted, SpecVersion: env.Spec.SpecVersion,
			StopReason: "this environment left this runner"}}
}

// TestReleasedEnvironmentDeleted (review REV-1): a runner restarted after
// its environment moved away is sent the release (a DELETED copy with no
// status) and no longer holds a worker for it: a worker is made for it,
// stops the running container, removes the environment's directory and
// reports DELETED, then exits.
func TestReleasedEnvironmentDeleted(t *testing.T) {
	c := newCrashWorld(t)
	env := c.env()
	c.converge(c.runner(0, false), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	if _, ok := running(c.rt, env.Id); !ok {
		t.Fatal("the environment is not running before the move")
	}
	srv := c.movedAway()
	srv.release()
	r := c.runner(0, false) // restarted: no workers
	ctx, cancel := context.WithCancel(testutil.Context(t))
	defer cancel()
	r.dispatch(ctx, released(env))
	testutil.WaitFor(t, "the released environment deleted and reported", func() bool {
		return srv.deleted() && !r.hasWorker(env.Id)
	})
	env.Spec.DesiredPhase = phaseDeleted
	c.check(env) // container absent, envs/<id> removed, its uid range free
}

// TestRefusedReportStopsEnvironment (review REV-1): while the release has
// not reached the runner, the server refuses its reports about the
// environment (PermissionDenied): the worker stops the environment (its
// containers), keeps its files (they may be newer than the backup it was
// moved from) and stops reporting; the release then deletes it.
func TestRefusedReportStopsEnvironment(t *testing.T) {
	c := newCrashWorld(t)
	env := c.env()
	c.converge(c.runner(0, false), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	srv := c.movedAway()
	r := c.runner(0, false)
	lay := r.layout(env.Id)
	ctx, cancel := context.WithCancel(testutil.Context(t))
	defer cancel()
	r.dispatch(ctx, env) // its last assignment, as the runner knew it
	testutil.WaitFor(t, "the refused environment stopped", func() bool {
		s, _ := c.rt.State(context.Background(), env.Id)
		w := r.workerOf(env.Id)
		return s.Status == runtime.StatusAbsent && w != nil && w.isOrphaned() && !c.images.mounted(lay.Rootfs())
	})
	if _, err := os.Stat(lay.State()); err != nil {
		t.Fatalf("the stopped orphan's files were not kept: %v", err)
	}
	refused, accepted := srv.counts()
	if refused == 0 || accepted != 0 {
		t.Fatalf("reports refused %d, accepted %d; want the refusal that stopped it, nothing accepted", refused, accepted)
	}
	// The release arrives: deleted as usual.
	srv.release()
	r.dispatch(ctx, released(env))
	testutil.WaitFor(t, "the released environment deleted", func() bool {
		return srv.deleted() && !r.hasWorker(env.Id)
	})
	env.Spec.DesiredPhase = phaseDeleted
	c.check(env)
}

// TestDeletedWithoutReportExits: an environment to delete whose reports
// the server refuses as not this runner's (deleted without it before
// releases existed) is deleted here all the same, and its worker exits
// instead of retrying the report for ever.
func TestDeletedWithoutReportExits(t *testing.T) {
	c := newCrashWorld(t)
	env := c.env()
	c.converge(c.runner(0, false), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	srv := c.movedAway() // refuses every report
	r := c.runner(0, false)
	ctx, cancel := context.WithCancel(testutil.Context(t))
	defer cancel()
	env.Spec.DesiredPhase = phaseDeleted
	env.Spec.SpecVersion++
	r.dispatch(ctx, env)
	testutil.WaitFor(t, "the deleted environment's worker to exit", func() bool { return !r.hasWorker(env.Id) })
	c.check(env)
	if refused, accepted := srv.counts(); refused == 0 || accepted != 0 {
		t.Fatalf("reports refused %d, accepted %d; want refused only", refused, accepted)
	}
}
