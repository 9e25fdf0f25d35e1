package runner

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/content"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/lifecycle"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/runtime/runtimetest"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// recorder is a reporter that keeps what steps report.
type recorder struct {
	subs    map[subStatus][]covev1.SubPhase
	msgs    map[subStatus][]string
	readies int
}

func newRecorder() *recorder {
	return &recorder{subs: map[subStatus][]covev1.SubPhase{}, msgs: map[subStatus][]string{}}
}

func (r *recorder) sub(which subStatus, phase covev1.SubPhase, msg string) {
	r.subs[which] = append(r.subs[which], phase)
	r.msgs[which] = append(r.msgs[which], msg)
}
func (r *recorder) ready() { r.readies++ }

func testStepEnv(t *testing.T, st *envState) (*stepEnv, *recorder) {
	rec := newRecorder()
	env := &covev1.Environment{Id: "e1", Metadata: &covev1.EnvironmentMetadata{Name: "dev"}, Spec: &covev1.EnvironmentSpec{RebuildGeneration: 4}}
	lay := envdir.New(t.TempDir(), "e1")
	if err := os.MkdirAll(lay.Dir, 0o711); err != nil {
		t.Fatal(err)
	}
	return &stepEnv{env: env, lay: lay, st: st, rep: rec}, rec
}

// countingStep counts its runs.
type countingStep struct{ n *int }

func (c countingStep) run(context.Context, *stepEnv) error { *c.n++; return nil }

func TestRestartStep(t *testing.T) {
	for _, tt := range []struct {
		name         string
		pending      bool
		installedPid int
		wantRestart  bool
	}{
		{"nothing pending", false, 0, false},
		{"installed in the running container", true, 0, true}, // pid filled in below
		{"container started afresh since", true, 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rt := runtimetest.NewFake()
			must(t, rt.Start(context.Background(), runtime.Spec{ID: "e1"}))
			must(t, rt.Start(context.Background(), runtime.Spec{ID: "e1-db"}))
			cs, _ := rt.State(context.Background(), "e1")
			installed := tt.installedPid
			if installed == 0 {
				installed = cs.Pid
			}
			st := &envState{Features: featuresState{Installed: true, InstalledPid: installed, RestartPending: tt.pending}}
			e, _ := testStepEnv(t, st)
			n := 0
			c := countingStep{&n}
			// The "start" starts the dev container again, as the start step does.
			start := stepFunc(func(ctx context.Context, e *stepEnv) error { n++; return rt.Start(ctx, runtime.Spec{ID: "e1"}) })
			s := restartStep{rt: rt, start: start, wait: c, agents: fakeAgents{}}
			if err := s.run(context.Background(), e); err != nil {
				t.Fatal(err)
			}
			restarted := rt.Starts("e1") == 2
			if restarted != tt.wantRestart || (tt.wantRestart && n != 2) {
				t.Errorf("restarted %v (%d sub-steps), want %v", restarted, n, tt.wantRestart)
			}
			if rt.Starts("e1-db") != 1 {
				t.Error("a Compose service was restarted with the dev container")
			}
			if st.Features.RestartPending {
				t.Error("restart still pending")
			}
		})
	}
	// A failing start leaves the restart pending: it is planned again.
	rt := runtimetest.NewFake()
	must(t, rt.Start(context.Background(), runtime.Spec{ID: "e1"}))
	cs, _ := rt.State(context.Background(), "e1")
	st := &envState{Features: featuresState{Installed: true, InstalledPid: cs.Pid, RestartPending: true}}
	e, _ := testStepEnv(t, st)
	boom := stepFunc(func(context.Context, *stepEnv) error { return errors.New("boom") })
	s := restartStep{rt: rt, start: boom, wait: boom, agents: fakeAgents{}}
	if err := s.run(context.Background(), e); err == nil || !st.Features.RestartPending {
		t.Fatalf("err %v, pending %v: want an error and the restart still pending", err, st.Features.RestartPending)
	}
}

// stepFunc is a stepper from a function.
type stepFunc func(context.Context, *stepEnv) error

func (f stepFunc) run(ctx context.Context, e *stepEnv) error { return f(ctx, e) }

func TestResetStep(t *testing.T) {
	st := &envState{Image: envconfig.Resolved{Ref: "img", Digest: "sha256:x", Layers: []string{"/l"}, DC: &envconfig.DevcontainerState{FeaturesKey: "k"}},
		Features: featuresState{Installed: true}, Lifecycle: lifecycleState{CreatedDone: true, Pid: 3}, Content: contentState{RepoName: "app", Ready: true}}
	e, _ := testStepEnv(t, st)
	for _, d := range []string{e.lay.Upper(), e.lay.Work(), e.lay.Service("db").Upper(), e.lay.Workspace()} {
		if err := os.MkdirAll(filepath.Join(d, "x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := (resetStep{}).run(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if st.Rebuild.Generation != 4 || st.Image.Digest != "" || st.Image.DC != nil || st.Features.Installed || st.Lifecycle.CreatedDone || st.Lifecycle.Pid != 0 {
		t.Errorf("state after reset: %+v", st)
	}
	if st.Image.Ref != "img" || !st.Content.Ready {
		t.Errorf("reset dropped what it does not own: %+v", st)
	}
	for _, d := range []string{e.lay.Upper(), e.lay.Work(), e.lay.Services()} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left: %v", d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(e.lay.Workspace(), "x")); err != nil {
		t.Errorf("workspace lost: %v", err)
	}
	// The state on disk says the new generation before anything is gone.
	saved, err := loadState(e.lay.State())
	if err != nil || saved.Rebuild.Generation != 4 {
		t.Errorf("saved state %+v, %v", saved, err)
	}
}

func TestLifecycleStepWithoutCommands(t *testing.T) {
	rt := runtimetest.NewFake()
	rt.Set("e1", runtime.State{Status: runtime.StatusRunning, Pid: 42})
	for _, tt := range []struct {
		name string
		st   *envState
	}{
		{"no devcontainer.json", &envState{}},
		{"no commands", &envState{Image: envconfig.Resolved{DC: &envconfig.DevcontainerState{}}}},
		{"features failed in this container", &envState{Image: envconfig.Resolved{DC: &envconfig.DevcontainerState{Hooks: hooksWithPostStart()}}, Features: featuresState{FailedPid: 42}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, rec := testStepEnv(t, tt.st)
			s := lifecycleStep{rt: rt, agents: fakeAgents{rt: rt, idOf: func(string) string { return "e1" }}}
			if err := s.run(context.Background(), e); err != nil {
				t.Fatal(err)
			}
			if rec.readies != 1 || tt.st.Lifecycle.Pid != 42 {
				t.Errorf("ready %d times, lifecycle pid %d: want ready once and pid 42", rec.readies, tt.st.Lifecycle.Pid)
			}
		})
	}
}

func TestFeaturesStepNothingPending(t *testing.T) {
	rt := runtimetest.NewFake()
	rt.Set("e1", runtime.State{Status: runtime.StatusRunning, Pid: 42})
	for name, st := range map[string]*envState{
		"no features":       {Image: envconfig.Resolved{DC: &envconfig.DevcontainerState{}}},
		"installed":         {Image: envconfig.Resolved{DC: &envconfig.DevcontainerState{FeaturesPending: true}}, Features: featuresState{Installed: true}},
		"failed here":       {Image: envconfig.Resolved{DC: &envconfig.DevcontainerState{FeaturesPending: true}}, Features: featuresState{FailedPid: 42}},
		"no devcontainer":   {},
		"cached layer used": {Image: envconfig.Resolved{DC: &envconfig.DevcontainerState{FeaturesKey: "k"}}},
	} {
		t.Run(name, func(t *testing.T) {
			e, rec := testStepEnv(t, st)
			// The fake agents refuse every command: a step that tried to
			// install would fail.
			s := featuresStep{rt: rt, agents: fakeAgents{rt: rt, idOf: func(string) string { return "e1" }}}
			if err := s.run(context.Background(), e); err != nil {
				t.Fatalf("ran an installation: %v", err)
			}
			if len(rec.subs) != 0 {
				t.Errorf("reported %v", rec.msgs)
			}
		})
	}
}

func TestPrepareStep(t *testing.T) {
	e, _ := testStepEnv(t, nil)
	if err := os.Remove(e.lay.Dir); err != nil {
		t.Fatal(err)
	}
	ranges := newRangeAllocator(uint32(os.Getgid()), 1, 1)
	if os.Getuid() != os.Getgid() {
		t.Skip("the environment's range is the test's own gid, which it gives the directory to")
	}
	if err := (prepareStep{ranges: ranges}).run(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if e.st == nil || e.st.ID != "e1" || e.st.IDMap != (idmap.Range{HostID: uint32(os.Getgid()), Size: 1}) {
		t.Fatalf("state %+v", e.st)
	}
	fi, err := os.Stat(e.lay.Dir)
	if err != nil || fi.Mode().Perm() != 0o710 {
		t.Errorf("environment directory: %v %v", fi.Mode(), err)
	}
	// The runner is full: a clear message, nothing allocated.
	e2, _ := testStepEnv(t, nil)
	e2.env.Id = "e2"
	err = (prepareStep{ranges: ranges}).run(context.Background(), e2)
	if msg := userMessage(err); err == nil || msg == "internal error (see runner log)" || e2.st != nil {
		t.Errorf("second environment on a full runner: %v (%q), state %v", err, msg, e2.st)
	}
}

func hooksWithPostStart() lifecycle.Hooks {
	return lifecycle.Hooks{PostStart: []lifecycle.Command{{Shell: "echo hi"}}}
}

// TestFailedFeaturesAreNeverCached: when an installation fails, users get
// into the environment (to fix it) and can write anything to its file
// system, including the staged install script; a later installation that
// succeeds in that file system must not become the cached features layer
// the project's other environments start from.
func TestFailedFeaturesAreNeverCached(t *testing.T) {
	rt := runtimetest.NewFake()
	must(t, rt.Start(context.Background(), runtime.Spec{ID: "e1"}))
	exec := &scriptedExec{codes: []int{1, 0}}
	layers := t.TempDir()
	snapshots := 0
	st := &envState{Image: envconfig.Resolved{DC: &envconfig.DevcontainerState{FeaturesPending: true, FeaturesKey: "sha256:k"}}}
	e, rec := testStepEnv(t, st)
	must(t, os.MkdirAll(e.lay.LogDir(), 0o755))
	f := featuresStep{rt: rt, agents: fakeAgents{rt: rt, idOf: func(string) string { return "e1" }, exec: exec},
		endpoint: func(string) agentclient.Endpoint { return agentclient.Endpoint{} },
		layer:    func(key string) string { snapshots++; return filepath.Join(layers, key) }, gc: &gcLock{},
		log: slog.New(slog.DiscardHandler)}
	// The first installation fails: users are let in.
	must(t, f.run(context.Background(), e))
	if rec.readies != 1 || !st.Features.Entered || st.Features.Installed {
		t.Fatalf("after a failed install: ready %d, features %+v", rec.readies, st.Features)
	}
	// The next start (a new container) installs again, successfully.
	must(t, rt.Stop(context.Background(), "e1", 0))
	must(t, rt.Delete(context.Background(), "e1"))
	must(t, rt.Start(context.Background(), runtime.Spec{ID: "e1"}))
	must(t, f.run(context.Background(), e))
	if !st.Features.Installed || len(exec.ran) != 2 {
		t.Fatalf("second install: features %+v, ran %q", st.Features, exec.ran)
	}
	if snapshots != 0 {
		t.Fatal("a file system users had before the installation was cached as the features layer")
	}
	if _, err := os.Stat(filepath.Join(layers, "sha256:k")); err == nil {
		t.Fatal("features layer written")
	}
}

// jumpClock is a clock whose waits return at once, moving its time on.
type jumpClock struct{ now time.Time }

func (c *jumpClock) Now() time.Time                  { return c.now }
func (c *jumpClock) Since(t time.Time) time.Duration { return c.now.Sub(t) }
func (c *jumpClock) After(d time.Duration) <-chan time.Time {
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func TestWaitAgentStep(t *testing.T) {
	rt := runtimetest.NewFake()
	e, _ := testStepEnv(t, &envState{})
	sock := e.lay.AgentSocket()
	ep := func(string) agentclient.Endpoint { return agentclient.Endpoint{Socket: sock} }
	agents := fakeAgents{rt: rt, idOf: func(string) string { return "e1" }}
	clk := &jumpClock{now: time.Unix(1e9, 0)}
	w := waitAgentStep{agents: agents, endpoint: ep, clock: clk}

	// Nothing answers: after agentTimeout, a visible error that is not
	// retried (nothing inside an environment decides the runner retries).
	err := w.run(context.Background(), e)
	if msg, ok := usererr.Message(err); !ok || !strings.Contains(msg, "did not start within") || errdefs.Retryable(err) {
		t.Fatalf("no agent: %v (visible %v, retryable %v)", err, ok, errdefs.Retryable(err))
	}
	if waited := clk.now.Sub(time.Unix(1e9, 0)); waited < agentTimeout {
		t.Errorf("gave up after %s, before %s", waited, agentTimeout)
	}
	// The agent answers: done.
	must(t, rt.Start(context.Background(), runtime.Spec{ID: "e1"}))
	must(t, os.WriteFile(sock, nil, 0o600))
	if err := w.run(context.Background(), e); err != nil {
		t.Fatalf("agent answering: %v", err)
	}
}

func TestMountStepGivesTheWorkspaceOnce(t *testing.T) {
	st := &envState{}
	e, rec := testStepEnv(t, st)
	images := newFakeImages(t.TempDir())
	chowns := 0
	m := mountStep{images: images, gc: &gcLock{}, chown: func(context.Context, string, idmap.Range, uint32, uint32) error { chowns++; return nil }}
	// Root's workspace for a root user: nothing to give.
	must(t, m.run(context.Background(), e))
	if chowns != 0 || !images.mounted(e.lay.Rootfs()) {
		t.Fatalf("root user: %d chowns, mounted %v", chowns, images.mounted(e.lay.Rootfs()))
	}
	// A user of the image: given once, recorded.
	must(t, os.MkdirAll(filepath.Join(e.lay.Rootfs(), "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(e.lay.Rootfs(), "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\ndev:x:1000:1000::/home/dev:/bin/sh\n"), 0o644))
	st.Image.User = "dev"
	must(t, m.run(context.Background(), e))
	must(t, m.run(context.Background(), e))
	if chowns != 1 || st.Mount.WorkspaceOwner != "1000:1000" {
		t.Errorf("%d chowns, owner %q: want one, 1000:1000", chowns, st.Mount.WorkspaceOwner)
	}
	// An unknown user is the image's fault, said plainly.
	st.Image.User = "ghost"
	if msg, ok := usererr.Message(m.run(context.Background(), e)); !ok || !strings.Contains(msg, "ghost") {
		t.Errorf("unknown user: %q", msg)
	}
	if len(rec.subs[subMachine]) == 0 {
		t.Error("no progress reported")
	}
}

func TestCloneStep(t *testing.T) {
	st := &envState{}
	e, rec := testStepEnv(t, st)
	e.env.Spec.Content = &covev1.ContentSource{GitUrl: "https://git.invalid/team/app.git"}
	var got content.Options
	c := cloneStep{net: envNet{n: loopbackNetwork{}}, clone: func(_ context.Context, src content.Source, opts content.Options) (string, error) {
		got = opts
		if src.GitURL != "https://git.invalid/team/app.git" {
			t.Errorf("cloned %q", src.GitURL)
		}
		return filepath.Join(opts.WorkspaceDir, "app"), nil
	}, sandbox: []string{"/cove", "internal-sandbox"}}
	must(t, c.run(context.Background(), e))
	if st.Content != (contentState{RepoName: "app", Ready: true}) || got.WorkspaceDir != e.lay.Workspace() || got.NetNSPath != "" || len(got.Sandbox) != 2 {
		t.Errorf("content %+v, options %+v", st.Content, got)
	}
	if b, err := os.ReadFile(e.lay.Hosts()); err != nil || !strings.Contains(string(b), "dev") {
		t.Errorf("hosts file %q, %v", b, err)
	}
	if p := rec.subs[subContent]; len(p) != 2 || p[1] != subReady {
		t.Errorf("content sub-statuses %v", p)
	}
	// A failed clone says why on the content sub-status and records
	// nothing.
	st2 := &envState{}
	e2, rec2 := testStepEnv(t, st2)
	e2.env.Spec.Content = &covev1.ContentSource{GitUrl: "https://git.invalid/team/app.git"}
	c.clone = func(context.Context, content.Source, content.Options) (string, error) {
		return "", usererr.New("git clone: repository not found")
	}
	if err := c.run(context.Background(), e2); err == nil || st2.Content.Ready {
		t.Fatalf("failed clone: %v, content %+v", err, st2.Content)
	}
	if m := rec2.msgs[subContent]; len(m) != 2 || m[1] != "git clone: repository not found" {
		t.Errorf("content messages %q", m)
	}
}
