package runner

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/content"
	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

// allStatuses is a server that keeps every status each environment
// reported.
type allStatuses struct {
	covev1connect.UnimplementedRunnerServiceHandler
	mu  sync.Mutex
	all []*covev1.EnvironmentStatus
}

func (s *allStatuses) ReportStatus(_ context.Context, req *connect.Request[covev1.ReportStatusRequest]) (*connect.Response[covev1.ReportStatusResponse], error) {
	s.mu.Lock()
	s.all = append(s.all, req.Msg.GetStatus())
	s.mu.Unlock()
	return connect.NewResponse(&covev1.ReportStatusResponse{}), nil
}

func (s *allStatuses) seen(cond func(*covev1.EnvironmentStatus) bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.all {
		if cond(st) {
			return true
		}
	}
	return false
}

func (s *allStatuses) last() *covev1.EnvironmentStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.all) == 0 {
		return nil
	}
	return s.all[len(s.all)-1]
}

// lifecycleWorld is a crashWorld whose repository has devcontainer.json
// dcJSON, whose agents run commands with exec, and whose server keeps
// every status.
func lifecycleWorld(t *testing.T, dcJSON string, exec execer) (*crashWorld, *allStatuses, func() *Runner) {
	c := newCrashWorld(t)
	srv := &allStatuses{}
	path, h := covev1connect.NewRunnerServiceHandler(srv)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	c.api = &client{api: covev1connect.NewRunnerServiceClient(hs.Client(), hs.URL)}
	return c, srv, func() *Runner {
		r := c.runner(0, false)
		r.agents = fakeAgents{rt: c.rt, idOf: func(sock string) string { return filepath.Base(filepath.Dir(sock)) }, exec: exec}
		clone := func(_ context.Context, _ content.Source, opts content.Options) (string, error) {
			repo := filepath.Join(opts.WorkspaceDir, "app")
			p := filepath.Join(repo, ".devcontainer", "devcontainer.json")
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return "", err
			}
			return repo, os.WriteFile(p, []byte(dcJSON), 0o644)
		}
		r.steps = r.makeSteps(deps{images: c.images, net: loopbackNetwork{}, agents: r.agents, clock: realClock{}, clone: clone,
			chown:  func(context.Context, string, idmap.Range, uint32, uint32) error { return nil },
			stager: func(ws, _ string) (binder, error) { return pathBinder(ws), nil }})
		return r
	}
}

// TestLateLifecycleFailure: with waitFor onCreateCommand, the environment
// is RUNNING while postCreateCommand runs (status.lifecycle IN_PROGRESS);
// when postCreateCommand fails, the environment stays RUNNING and
// status.lifecycle is FAILED naming the command, its exit code and its
// output's end — also as reported by a restarted runner and after a stop
// and start (creation commands do not run again); a rebuild runs them
// again and clears it.
func TestLateLifecycleFailure(t *testing.T) {
	exec := &hookExec{}
	c, srv, newRunner := lifecycleWorld(t, `{
		"image": "registry.invalid/dev:1",
		"waitFor": "onCreateCommand",
		"onCreateCommand": "echo setting up",
		"postCreateCommand": "make deps",
		"postStartCommand": "echo started"
	}`, exec)
	running := func(s *covev1.EnvironmentStatus) bool {
		return s.GetPhase() == phaseRunning && s.GetLifecycle().GetPhase() == subInProgress
	}
	exec.code = map[string]int{"make deps": 3}
	exec.out = map[string]string{"echo setting up": "setting up\n", "make deps": "fetching deps\nE: package libfoo-dev has no candidate\n"}
	exec.before = map[string]func(){"make deps": func() {
		// Users are let in before postCreateCommand ends.
		testutil.WaitFor(t, "RUNNING with lifecycle IN_PROGRESS reported", func() bool { return srv.seen(running) })
	}}
	env := c.env()
	c.converge(newRunner(), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })

	checkFailed := func(when string) {
		t.Helper()
		last := srv.last()
		if last.GetPhase() != phaseRunning || last.GetFailureMessage() != "" {
			t.Fatalf("%s: phase %s, failure %q: want RUNNING without a failure", when, last.GetPhase(), last.GetFailureMessage())
		}
		lc := last.GetLifecycle()
		if lc.GetPhase() != subFailed {
			t.Fatalf("%s: lifecycle %v, want FAILED", when, lc)
		}
		for _, want := range []string{"postCreateCommand failed with exit code 3: make deps", "E: package libfoo-dev has no candidate"} {
			if !strings.Contains(lc.GetMessage(), want) {
				t.Errorf("%s: lifecycle message lacks %q:\n%s", when, want, lc.GetMessage())
			}
		}
	}
	checkFailed("after create")
	if d := srv.last().GetDevcontainer(); d.GetPhase() != subFailed {
		t.Errorf("devcontainer sub-status %v, want FAILED", d)
	}

	// A restarted runner (nothing in memory) reports the same.
	n := len(srv.all)
	if err := c.reconcileUntil(newRunner(), env); err != nil {
		t.Fatal(err)
	}
	if len(srv.all) == n {
		t.Fatal("the restarted runner reported nothing")
	}
	checkFailed("after a runner restart")

	// Stop and start: postStartCommand runs, postCreateCommand does not;
	// its failure is still reported.
	c.converge(newRunner(), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	c.converge(newRunner(), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	if got := exec.ranCount("make deps"); got != 1 {
		t.Errorf("postCreateCommand ran %d times, want once", got)
	}
	if got := exec.ranCount("echo started"); got != 1 {
		t.Errorf("postStartCommand ran %d times, want once: not after the failed postCreateCommand, then at the start", got)
	}
	checkFailed("after stop and start")

	// Fixed and rebuilt: READY.
	exec.mu.Lock()
	exec.code["make deps"] = 0
	exec.mu.Unlock()
	c.converge(newRunner(), env, func(s *covev1.EnvironmentSpec) { s.RebuildGeneration++ })
	if lc := srv.last().GetLifecycle(); lc.GetPhase() != subReady || srv.last().GetPhase() != phaseRunning {
		t.Errorf("after a rebuild that succeeded: phase %s, lifecycle %v; want RUNNING, READY", srv.last().GetPhase(), lc)
	}
}

// TestLifecycleStatusPending: a pass that will run lifecycle commands
// never reports the previous run's READY (a `--wait-all` could take it
// for this run's), and a postStartCommand failure at a start
// is reported, then cleared by the next start that succeeds.
func TestLifecycleStatusPending(t *testing.T) {
	exec := &hookExec{code: map[string]int{}, out: map[string]string{"start-db": "db: port in use\n"}}
	c, srv, newRunner := lifecycleWorld(t, `{"image": "registry.invalid/dev:1", "postStartCommand": "start-db"}`, exec)
	env := c.env()
	c.converge(newRunner(), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	if lc := srv.last().GetLifecycle(); lc.GetPhase() != subReady {
		t.Fatalf("lifecycle %v, want READY", lc)
	}
	for i, code := range []int{5, 0} {
		c.converge(newRunner(), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
		exec.mu.Lock()
		exec.code["start-db"] = code
		exec.mu.Unlock()
		from := len(srv.all)
		c.converge(newRunner(), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
		srv.mu.Lock()
		pass := srv.all[from:]
		srv.mu.Unlock()
		for j, s := range pass {
			if s.GetLifecycle().GetPhase() == subReady && code != 0 {
				t.Errorf("start %d: report %d (%s) has the last run's lifecycle READY", i, j, s.GetPhase())
			}
		}
		lc := srv.last().GetLifecycle()
		switch {
		case code != 0 && (lc.GetPhase() != subFailed || !strings.Contains(lc.GetMessage(), fmt.Sprintf("postStartCommand failed with exit code %d: start-db", code)) || !strings.Contains(lc.GetMessage(), "db: port in use")):
			t.Errorf("start %d: lifecycle %v, want FAILED naming postStartCommand with its output", i, lc)
		case code == 0 && lc.GetPhase() != subReady:
			t.Errorf("start %d: lifecycle %v, want READY", i, lc)
		}
	}
}

// TestLocalEnvFromSpec: ${localEnv:VAR} resolves to what the creating CLI
// sent in spec.localEnv; a variable it did not send gets its default (or
// "") with a warning naming it; the runner's own environment is never
// read, even for a variable a repository names on purpose.
func TestLocalEnvFromSpec(t *testing.T) {
	t.Setenv("COVE_RUNNER_SECRET", "runner-secret-value")
	exec := &hookExec{}
	c, srv, newRunner := lifecycleWorld(t, `{
		"image": "registry.invalid/dev:1",
		"postCreateCommand": "echo sent=${localEnv:COVE_X} default=${localEnv:COVE_UNSET:fallback} secret=${localEnv:COVE_RUNNER_SECRET}"
	}`, exec)
	env := c.env()
	env.Spec.LocalEnv = map[string]string{"COVE_X": "from the cli"}
	c.converge(newRunner(), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	if want := "echo sent=from the cli default=fallback secret="; exec.ranCount(want) != 1 {
		t.Fatalf("ran %q, want %q once", exec.ran, want)
	}
	warns := strings.Join(srv.last().GetWarnings(), "\n")
	for _, want := range []string{`${localEnv:COVE_UNSET} was not sent by the creating CLI`, `its default "fallback"`, `${localEnv:COVE_RUNNER_SECRET} was not sent by the creating CLI (unset in its shell, or created without a CLI): empty`, "devcontainer.json:3:"} {
		if !strings.Contains(warns, want) {
			t.Errorf("warnings lack %q:\n%s", want, warns)
		}
	}
	if strings.Contains(warns, "COVE_X") || strings.Contains(warns, "runner-secret-value") {
		t.Errorf("warnings name a sent variable or leak the runner's:\n%s", warns)
	}
}
