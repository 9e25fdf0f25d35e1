package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	"github.com/covedev/cove/internal/usererr"
)

// fakeRunner interprets tiny scripts: "exit N", "echo TEXT", "sleep"
// (until ctx is done), "error" (could not run); it records what ran, in
// order.
type fakeRunner struct {
	mu      sync.Mutex
	ran     []string
	running int
	maxPar  int
	onExec  func(cmd string)
}

func (f *fakeRunner) Exec(ctx context.Context, c Command, out io.Writer) (int, error) {
	if len(c.Parallel) > 0 {
		return -1, errors.New("runner got an object-form command")
	}
	cmd := c.Shell
	if len(c.Args) > 0 {
		cmd = "[" + strings.Join(c.Args, ",") + "]"
	}
	f.mu.Lock()
	f.ran = append(f.ran, cmd)
	f.running++
	f.maxPar = max(f.maxPar, f.running)
	hook := f.onExec
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.running--; f.mu.Unlock() }()
	if hook != nil {
		hook(cmd)
	}
	switch {
	case strings.HasPrefix(strings.TrimPrefix(cmd, "["), "exit "):
		var n int
		fmt.Sscanf(strings.TrimPrefix(cmd, "["), "exit %d", &n)
		fmt.Fprintf(out, "exiting %d\n", n)
		return n, nil
	case strings.HasPrefix(cmd, "echo "):
		fmt.Fprintln(out, strings.TrimPrefix(cmd, "echo "))
	case strings.HasPrefix(cmd, "sleep"):
		<-ctx.Done()
		return -1, ctx.Err()
	case cmd == "error":
		return -1, errors.New("agent went away")
	}
	return 0, nil
}

func sh(s string) Command { return Command{Shell: s} }

func TestRun(t *testing.T) {
	full := Hooks{
		Initialize:    []Command{sh("echo init")},
		OnCreate:      []Command{{Shell: "echo feature-oncreate", Origin: "Feature 'ghcr.io/x/node:1'"}, sh("echo oncreate")},
		UpdateContent: []Command{sh("echo update")},
		PostCreate:    []Command{{Args: []string{"echo", "post create"}}},
		PostStart:     []Command{sh("echo start")},
		PostAttach:    []Command{sh("echo attach")},
	}
	withWait := func(h Hooks, w string) Hooks { h.WaitFor = w; return h }
	createOrder := []string{"echo feature-oncreate", "echo oncreate", "echo update", "[echo,post create]", "echo start"}
	for _, tc := range []struct {
		name       string
		hooks      Hooks
		kind       StartKind
		want       []string // commands run, in order
		readyAfter int      // commands run when onReady was called; -1: never
		failStage  string
		failCode   int
		errText    string
	}{
		{name: "create", hooks: full, kind: Create, want: createOrder, readyAfter: 3},
		{name: "rebuild", hooks: full, kind: Rebuild, want: createOrder, readyAfter: 3},
		{name: "start", hooks: full, kind: Start, want: []string{"echo start"}, readyAfter: 0},
		{name: "start waitFor postStart", hooks: withWait(full, StagePostStart), kind: Start, want: []string{"echo start"}, readyAfter: 1},
		{name: "waitFor onCreate", hooks: withWait(full, StageOnCreate), kind: Create, want: createOrder, readyAfter: 2},
		{name: "waitFor postCreate", hooks: withWait(full, StagePostCreate), kind: Create, want: createOrder, readyAfter: 4},
		{name: "waitFor postAttach", hooks: withWait(full, StagePostAttach), kind: Create, want: createOrder, readyAfter: 5},
		{name: "waitFor initialize", hooks: withWait(full, StageInitialize), kind: Create, want: createOrder, readyAfter: 0},
		{name: "unknown waitFor", hooks: withWait(full, "bogus"), kind: Create, want: createOrder, readyAfter: 3},
		{name: "empty", hooks: Hooks{OnCreate: []Command{{}, sh("")}}, kind: Create, want: nil, readyAfter: 0},
		{
			name:  "failure stops the sequence",
			hooks: Hooks{OnCreate: []Command{sh("echo a")}, PostCreate: []Command{sh("exit 3"), sh("echo never")}, PostStart: []Command{sh("echo never")}},
			kind:  Create, want: []string{"echo a", "exit 3"}, readyAfter: 1,
			failStage: StagePostCreate, failCode: 3, errText: "postCreateCommand failed with exit code 3: exit 3",
		},
		{
			name:  "failure before waitFor: not ready",
			hooks: Hooks{OnCreate: []Command{sh("exit 1")}, UpdateContent: []Command{sh("echo never")}},
			kind:  Create, want: []string{"exit 1"}, readyAfter: -1,
			failStage: StageOnCreate, failCode: 1, errText: "onCreateCommand failed with exit code 1: exit 1",
		},
		{
			name:  "array failure is quoted",
			hooks: Hooks{PostStart: []Command{{Args: []string{"exit 2", "it's"}}}},
			kind:  Start, want: []string{"[exit 2,it's]"}, readyAfter: 0,
			failStage: StagePostStart, failCode: 2, errText: `postStartCommand failed with exit code 2: 'exit 2' 'it'\''s'`,
		},
		{
			name:  "could not run",
			hooks: Hooks{PostStart: []Command{sh("error")}},
			kind:  Start, want: []string{"error"}, readyAfter: 0,
			failStage: StagePostStart, failCode: -1, errText: "postStartCommand could not run: error",
		},
		{
			name: "parallel failure names the member",
			hooks: Hooks{PostCreate: []Command{{Parallel: map[string]Command{
				"ok": sh("echo fine"), "bad": sh("exit 4"), "arr": {Args: []string{"echo", "x"}},
			}}, sh("echo never")}},
			kind: Create, want: []string{"[echo,x]", "exit 4", "echo fine"}, readyAfter: 0,
			failStage: StagePostCreate, failCode: 4, errText: `postCreateCommand "bad" failed with exit code 4: exit 4`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &fakeRunner{}
			var log bytes.Buffer
			readyAt := -1
			res, err := Run(context.Background(), r, tc.hooks, tc.kind, &log, func() {
				if readyAt >= 0 {
					t.Error("onReady called twice")
				}
				r.mu.Lock()
				readyAt = len(r.ran)
				r.mu.Unlock()
			})
			if !sameSet(r.ran, tc.want, tc.hooks) {
				t.Errorf("ran %q, want %q", r.ran, tc.want)
			}
			if readyAt != tc.readyAfter || res.Ready != (tc.readyAfter >= 0) {
				t.Errorf("ready after %d commands (Ready %v), want %d", readyAt, res.Ready, tc.readyAfter)
			}
			if res.CreateRan != (tc.kind != Start) {
				t.Errorf("CreateRan = %v for %v", res.CreateRan, tc.kind)
			}
			if tc.errText == "" {
				if err != nil || res.Failed != nil {
					t.Fatalf("Run: %v (failed %+v)\nlog:\n%s", err, res.Failed, log.String())
				}
				return
			}
			msg, ok := usererr.Message(err)
			if !ok || msg != tc.errText {
				t.Errorf("error %v (user message %q), want %q", err, msg, tc.errText)
			}
			if res.Failed == nil || res.Failed.Stage != tc.failStage || res.Failed.ExitCode != tc.failCode {
				t.Errorf("Failed = %+v, want stage %s code %d", res.Failed, tc.failStage, tc.failCode)
			}
			if !strings.Contains(log.String(), tc.errText) {
				t.Errorf("log lacks the failure:\n%s", log.String())
			}
		})
	}
}

// sameSet compares in order, except that members of an object-form
// command may run in any order.
func sameSet(got, want []string, h Hooks) bool {
	if len(got) != len(want) {
		return false
	}
	parallel := false
	for _, s := range [][]Command{h.OnCreate, h.UpdateContent, h.PostCreate, h.PostStart} {
		for _, c := range s {
			parallel = parallel || len(c.Parallel) > 0
		}
	}
	if !parallel {
		for i := range got {
			if got[i] != want[i] {
				return false
			}
		}
		return true
	}
	seen := map[string]int{}
	for _, g := range got {
		seen[g]++
	}
	for _, w := range want {
		seen[w]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestRunLog(t *testing.T) {
	r := &fakeRunner{}
	var log bytes.Buffer
	h := Hooks{
		Initialize: []Command{sh("./prepare.sh")},
		OnCreate:   []Command{{Shell: "echo from feature", Origin: "Feature 'ghcr.io/x/y:1'"}},
		PostCreate: []Command{{Parallel: map[string]Command{"a": sh("echo one"), "b": sh("echo two")}}},
	}
	if _, err := Run(context.Background(), r, h, Create, &log, nil); err != nil {
		t.Fatal(err)
	}
	got := log.String()
	for _, want := range []string{
		"The initializeCommand from devcontainer.json is not run (it runs on the user's machine; cove runs remotely): ./prepare.sh\n",
		"Running the onCreateCommand from Feature 'ghcr.io/x/y:1'...\n$ echo from feature\nfrom feature\n",
		"Running the postCreateCommand from devcontainer.json...\n[a] $ echo one\n[b] $ echo two\n",
		"[a] one\n", "[b] two\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "postStartCommand") {
		t.Errorf("log mentions a stage without commands:\n%s", got)
	}
}

// TestParallelRunsConcurrently: each member waits until all three run, so
// the stage ends only if they run at once (run one after the other, the
// first would give up after testutil.Patience and the count would be 1).
func TestParallelRunsConcurrently(t *testing.T) {
	const n = 3
	arrived := make(chan struct{}, n)
	allIn := make(chan struct{})
	var once sync.Once
	r := &fakeRunner{onExec: func(string) {
		arrived <- struct{}{}
		if len(arrived) == n {
			once.Do(func() { close(allIn) })
		}
		select {
		case <-allIn:
		case <-time.After(testutil.Patience(t)):
		}
	}}
	h := Hooks{PostStart: []Command{{Parallel: map[string]Command{"a": sh("true"), "b": sh("true"), "c": sh("true")}}}}
	if _, err := Run(context.Background(), r, h, Start, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	if r.maxPar != n {
		t.Errorf("at most %d members ran at once, want %d", r.maxPar, n)
	}
}

func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := &fakeRunner{onExec: func(string) { cancel() }}
	h := Hooks{OnCreate: []Command{sh("sleep"), sh("echo never")}}
	res, err := Run(ctx, r, h, Create, io.Discard, nil)
	if !errors.Is(err, context.Canceled) || res.Failed != nil {
		t.Errorf("got %v, failed %+v; want context.Canceled", err, res.Failed)
	}
	if len(r.ran) != 1 {
		t.Errorf("ran %q after cancel", r.ran)
	}
}

func TestStateKind(t *testing.T) {
	if k := (State{}).Kind(false); k != Create {
		t.Errorf("new environment: %v", k)
	}
	if k := (State{CreatedDone: true}).Kind(false); k != Start {
		t.Errorf("created environment: %v", k)
	}
	if k := (State{CreatedDone: true}).Kind(true); k != Rebuild {
		t.Errorf("rebuild: %v", k)
	}
}

func TestRunStagePostAttach(t *testing.T) {
	r := &fakeRunner{}
	var log bytes.Buffer
	f, err := RunStage(context.Background(), r, StagePostAttach, []Command{sh("echo hi"), sh("exit 5")}, &log)
	if f == nil || f.ExitCode != 5 || f.Stage != StagePostAttach || err == nil {
		t.Fatalf("got %+v, %v", f, err)
	}
	if !strings.Contains(log.String(), "Running the postAttachCommand from devcontainer.json...\n$ echo hi\nhi\n") {
		t.Errorf("log:\n%s", log.String())
	}
}
