package runner

import (
	"context"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/lifecycle"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/runtime/runtimetest"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// lifecycleRecorder is a recorder that also takes status.lifecycle as the
// worker would report it at each sub-status change and at ready.
type lifecycleRecorder struct {
	*recorder
	st      func() *envState
	atReady []*covev1.SubStatus
}

func (r *lifecycleRecorder) ready() {
	r.recorder.ready()
	r.atReady = append(r.atReady, lifecycleStatus(r.st()))
}

// TestLifecycleStepLateFailure: with waitFor onCreateCommand, the step
// reports ready with the lifecycle IN_PROGRESS, then records
// postCreateCommand's failure (with its output's end) in the state, so
// that status.lifecycle is FAILED — also from the state as saved and
// loaded again (a restarted runner). A later start (postStartCommand only)
// keeps the creation failure; the next create clears it.
func TestLifecycleStepLateFailure(t *testing.T) {
	rt := runtimetest.NewFake()
	rt.Set("e1", runtime.State{Status: runtime.StatusRunning, Pid: 42})
	hooks := lifecycle.Hooks{WaitFor: lifecycle.StageOnCreate,
		OnCreate:   []lifecycle.Command{{Shell: "echo set up"}},
		PostCreate: []lifecycle.Command{{Shell: "make deps"}},
		PostStart:  []lifecycle.Command{{Shell: "echo started"}}}
	st := &envState{Image: envconfig.Resolved{DC: &envconfig.DevcontainerState{Hooks: hooks}}}
	e, rec := testStepEnv(t, st)
	must(t, os.MkdirAll(e.lay.LogDir(), 0o755))
	sr := &lifecycleRecorder{recorder: rec, st: func() *envState { return e.st }}
	e.rep = sr
	exec := &hookExec{code: map[string]int{"make deps": 3},
		out: map[string]string{"make deps": strings.Repeat("progress line\n", 50) + "E: package libfoo-dev has no candidate\n"}}
	s := lifecycleStep{rt: rt, agents: fakeAgents{rt: rt, idOf: func(string) string { return "e1" }, exec: exec},
		endpoint: func(string) agentclient.Endpoint { return agentclient.Endpoint{} }}
	lifecyclePending(st)
	if lc := lifecycleStatus(st); lc.GetPhase() != subInProgress {
		t.Fatalf("pending: %v", lc)
	}
	must(t, s.run(context.Background(), e))
	if len(sr.atReady) == 0 || sr.atReady[0].GetPhase() != subInProgress {
		t.Fatalf("lifecycle at ready %v, want IN_PROGRESS at the first", sr.atReady)
	}
	check := func(when string, st *envState) {
		t.Helper()
		lc := lifecycleStatus(st)
		msg := lc.GetMessage()
		if lc.GetPhase() != subFailed || !strings.HasPrefix(msg, "postCreateCommand failed with exit code 3: make deps\n") ||
			!strings.HasSuffix(msg, "progress line\nE: package libfoo-dev has no candidate") {
			t.Fatalf("%s: lifecycle %v", when, lc)
		}
		if lines := strings.Count(msg, "\n"); lines > outputTailLines {
			t.Errorf("%s: %d lines of output in the message, at most %d", when, lines, outputTailLines)
		}
	}
	check("after the run", st)
	must(t, saveState(e.lay.State(), st))
	loaded, err := loadState(e.lay.State())
	must(t, err)
	check("from the saved state", loaded)

	// A start in a new container: only postStartCommand runs; the
	// creation failure stays reported.
	rt.Set("e1", runtime.State{Status: runtime.StatusRunning, Pid: 43})
	lifecyclePending(loaded)
	e.st = loaded
	must(t, s.run(context.Background(), e))
	if exec.ranCount("make deps") != 1 || exec.ranCount("echo started") != 1 {
		t.Fatalf("ran %v", exec.ran)
	}
	check("after a start", loaded)

	// A create (after a rebuild reset the section) that succeeds: READY.
	loaded.Lifecycle = lifecycleState{}
	exec.code["make deps"] = 0
	must(t, s.run(context.Background(), e))
	if lc := lifecycleStatus(loaded); lc.GetPhase() != subReady || lc.GetMessage() != "" {
		t.Fatalf("after a create that succeeded: %v", lc)
	}
}

// TestLifecycleStepStartFailure: a failing postStartCommand is reported,
// and cleared by the next start that succeeds; a feature that failed to
// install means the commands did not run, which is reported too.
func TestLifecycleStepStartFailure(t *testing.T) {
	rt := runtimetest.NewFake()
	rt.Set("e1", runtime.State{Status: runtime.StatusRunning, Pid: 42})
	st := &envState{Image: envconfig.Resolved{DC: &envconfig.DevcontainerState{Hooks: lifecycle.Hooks{PostStart: []lifecycle.Command{{Shell: "start-db"}}}}},
		Lifecycle: lifecycleState{CreatedDone: true}}
	e, _ := testStepEnv(t, st)
	must(t, os.MkdirAll(e.lay.LogDir(), 0o755))
	exec := &hookExec{code: map[string]int{"start-db": 5}, out: map[string]string{"start-db": "db: port in use\n"}}
	s := lifecycleStep{rt: rt, agents: fakeAgents{rt: rt, idOf: func(string) string { return "e1" }, exec: exec},
		endpoint: func(string) agentclient.Endpoint { return agentclient.Endpoint{} }}
	must(t, s.run(context.Background(), e))
	if lc := lifecycleStatus(st); lc.GetPhase() != subFailed || lc.GetMessage() != "postStartCommand failed with exit code 5: start-db\n"+
		"Running the postStartCommand from devcontainer.json...\n$ start-db\ndb: port in use" {
		t.Fatalf("lifecycle %v", lc)
	}
	exec.code["start-db"] = 0
	must(t, s.run(context.Background(), e))
	if lc := lifecycleStatus(st); lc.GetPhase() != subReady {
		t.Fatalf("after a start that succeeded: %v", lc)
	}

	rt.Set("e1", runtime.State{Status: runtime.StatusRunning, Pid: 44})
	st.Features.FailedPid = 44
	must(t, s.run(context.Background(), e))
	if lc := lifecycleStatus(st); lc.GetPhase() != subFailed || !strings.Contains(lc.GetMessage(), "lifecycle commands not run: a feature failed to install") {
		t.Fatalf("features failed: %v", lc)
	}
	if exec.ranCount("start-db") != 2 {
		t.Errorf("ran %v", exec.ran)
	}
}

// hookExec is an agent that runs lifecycle commands by their text: it
// writes out[cmd] and exits with code[cmd]; before[cmd] runs first.
type hookExec struct {
	mu     sync.Mutex
	code   map[string]int
	out    map[string]string
	before map[string]func()
	ran    []string
}

func (h *hookExec) Exec(_ context.Context, req agentclient.ExecRequest) (int, error) {
	h.mu.Lock()
	h.ran = append(h.ran, req.Shell)
	f, out, code := h.before[req.Shell], h.out[req.Shell], h.code[req.Shell]
	h.mu.Unlock()
	if f != nil {
		f()
	}
	_, _ = io.WriteString(req.Stdout, out)
	return code, nil
}

func (h *hookExec) ranCount(cmd string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.ran {
		if c == cmd {
			n++
		}
	}
	return n
}

func TestOutputTail(t *testing.T) {
	msg := "postCreateCommand failed with exit code 1: x"
	for _, tc := range []struct{ log, want string }{
		{"a\nb\n" + msg + "\n", "a\nb"},
		{"", ""},
		{msg + "\n", ""},
		{strings.Repeat("é", outputTailBytes) + "\n" + msg + "\n", "…" + strings.Repeat("é", outputTailBytes/2)},
	} {
		if got := outputTail(tc.log, msg); got != tc.want {
			t.Errorf("outputTail(%q) = %q, want %q", tc.log, got, tc.want)
		}
	}
}
