package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/content"
	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/netenv"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/runtime/runtimetest"
	"github.com/covedev/cove/internal/sshgw"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

// lastStatus is a server that keeps the last status each environment
// reported.
type lastStatus struct {
	covev1connect.UnimplementedRunnerServiceHandler
	mu   sync.Mutex
	last map[string]*covev1.EnvironmentStatus
}

func (s *lastStatus) ReportStatus(_ context.Context, req *connect.Request[covev1.ReportStatusRequest]) (*connect.Response[covev1.ReportStatusResponse], error) {
	s.mu.Lock()
	s.last[req.Msg.GetEnvironmentId()] = req.Msg.GetStatus()
	s.mu.Unlock()
	return connect.NewResponse(&covev1.ReportStatusResponse{}), nil
}

// errCrash is what a step "killed" with the runner returns.
var errCrash = errors.New("runner killed")

// crashWorld is one host: a data directory, the containers, mounts and
// images that outlive any runner process, and the server.
type crashWorld struct {
	t      *testing.T
	dir    string
	rt     *runtimetest.Fake
	images *fakeImages
	api    *client
	srv    *lastStatus
	clones int
	// compose: the repository is a Docker Compose configuration (an app
	// and a db service) and the runner has environment networking.
	compose bool
	// crashed is the step the runner was killed in; mid: before the
	// state recorded it.
	crashed step
	mid     bool
}

func newCrashWorld(t *testing.T) *crashWorld {
	if os.Getuid() != os.Getgid() {
		t.Skipf("the test gives environments the runner's own uid as their range (uid %d, gid %d differ)", os.Getuid(), os.Getgid())
	}
	srv := &lastStatus{last: map[string]*covev1.EnvironmentStatus{}}
	path, h := covev1connect.NewRunnerServiceHandler(srv)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	dir := t.TempDir()
	return &crashWorld{t: t, dir: dir, rt: runtimetest.NewFake(), images: newFakeImages(filepath.Join(dir, "fake-layers")), srv: srv,
		api: &client{api: covev1connect.NewRunnerServiceClient(hs.Client(), hs.URL)}}
}

// runner starts a runner process on the world's host. crashAt > 0 kills it
// in its crashAt-th step: after the step's effects, before (mid) or after
// the state recorded them.
func (c *crashWorld) runner(crashAt int, mid bool) *Runner {
	t := c.t
	for _, d := range []string{c.dir, filepath.Join(c.dir, "envs")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := loadAgentKeys(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := sshgw.LoadOrCreateKey(filepath.Join(c.dir, "host_key"), "test")
	if err != nil {
		t.Fatal(err)
	}
	// Environments get the runner's own uid as their range, which an
	// unprivileged runner may give files to.
	id := uint32(os.Getuid())
	cfg := Config{DataDir: c.dir, Runtime: c.rt, DefaultImage: "registry.invalid/dev:1", RangeBase: id, RangeSize: 1, RangeSlots: 4,
		AgentBinary: "/bin/true", Log: slog.New(slog.DiscardHandler)}
	var nw network = loopbackNetwork{}
	if c.compose {
		nw = fakeNetwork{}
	}
	d := deps{images: c.images, net: nw, clock: realClock{},
		clone: func(_ context.Context, _ content.Source, opts content.Options) (string, error) {
			c.clones++
			repo := filepath.Join(opts.WorkspaceDir, "app")
			files := map[string]string{"README": "hi\n"}
			if c.compose {
				files[".devcontainer/devcontainer.json"] = `{"dockerComposeFile": "compose.yaml", "service": "app", "workspaceFolder": "/workspaces/app"}`
				files[".devcontainer/compose.yaml"] = composeYAML
			}
			for name, text := range files {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(repo, name)), 0o755); err != nil {
					return "", err
				}
				if err := os.WriteFile(filepath.Join(repo, name), []byte(text), 0o644); err != nil {
					return "", err
				}
			}
			return repo, nil
		},
		chown:  func(context.Context, string, idmap.Range, uint32, uint32) error { return nil },
		stager: func(ws, _ string) (binder, error) { return pathBinder(ws), nil },
	}
	r, err := newRunner(cfg, d, keys, hostKey)
	if err != nil {
		t.Fatal(err)
	}
	r.agents = fakeAgents{rt: c.rt, idOf: func(sock string) string { return filepath.Base(filepath.Dir(sock)) }}
	r.steps = r.makeSteps(deps{images: c.images, net: nw, agents: r.agents, clock: realClock{}, clone: d.clone, chown: d.chown, stager: d.stager})
	r.client = c.api
	if crashAt > 0 {
		n := 0
		for name, sp := range r.steps {
			r.steps[name] = crashingStep{sp: sp, crash: func() bool {
				n++
				if n == crashAt {
					c.crashed, c.mid = name, mid
				}
				return n == crashAt
			}, mid: mid}
		}
	}
	return r
}

// composeYAML is an app with a db service it depends on, and a volume.
const composeYAML = `
services:
  app:
    image: registry.invalid/app:1
    command: ["sleep", "infinity"]
    volumes:
      - ../..:/workspaces
    depends_on: [db]
  db:
    image: registry.invalid/db:1
    command: ["db", "--serve"]
    volumes:
      - dbdata:/data
volumes:
  dbdata:
`

// pathBinder "stages" a directory of the workspace by naming it (the fake
// runtime mounts nothing).
type pathBinder string

func (b pathBinder) stage(rel string, _ confine.Resolve, _ string) (string, error) {
	return filepath.Join(string(b), rel), nil
}

// fakeNetwork gives environments a "namespace" without making one.
type fakeNetwork struct{}

func (fakeNetwork) Setup(_ context.Context, id, hostname string, _ netenv.Policy, _ idmap.Range) (netenv.Attachment, error) {
	return netenv.Attachment{ID: id, NetNSPath: "/run/fake-netns/" + id, Hostname: hostname, ResolvConf: "nameserver 10.0.0.1\n",
		Hosts: "127.0.0.1\tlocalhost\n"}, nil
}
func (fakeNetwork) Teardown(context.Context, string) error { return nil }
func (fakeNetwork) Start(context.Context) error            { return nil }
func (fakeNetwork) Close(context.Context) error            { return nil }
func (fakeNetwork) Namespaced() bool                       { return true }

// crashingStep runs a step and then, once, "kills the runner".
type crashingStep struct {
	sp    stepper
	crash func() bool
	mid   bool
}

func (c crashingStep) run(ctx context.Context, e *stepEnv) error {
	if !c.crash() {
		return c.sp.run(ctx, e)
	}
	var before []byte
	if c.mid && e.st != nil {
		before, _ = json.Marshal(e.st)
	}
	err := c.sp.run(ctx, e)
	if c.mid && before != nil && e.st != nil {
		// The step's effects happened; the state never recorded them.
		var st envState
		if jerr := json.Unmarshal(before, &st); jerr == nil {
			*e.st = st
		}
	}
	return errors.Join(errCrash, err)
}

// testWorker is a worker for env whose loop the test drives (it calls
// r.reconcile itself).
func testWorker(ctx context.Context, cancel context.CancelFunc, r *Runner, env *covev1.Environment) *worker {
	return &worker{r: r, id: env.Id, ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1), env: env,
		content: &covev1.SubStatus{}, machine: &covev1.SubStatus{}}
}

// reconcileUntil runs r's reconcile loop for env until there is nothing
// left to do or a step crashes (then it returns errCrash).
func (c *crashWorld) reconcileUntil(r *Runner, env *covev1.Environment) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := testWorker(ctx, cancel, r, env)
	for pass := 0; pass < 20; pass++ {
		done, err := r.reconcile(ctx, w, env)
		if errors.Is(err, errCrash) {
			return errCrash
		}
		if err != nil {
			return fmt.Errorf("pass %d: %w", pass, err)
		}
		if done {
			return nil
		}
		st, _ := loadState(r.layout(env.Id).State())
		obs, err := r.observe(ctx, env.Id, st)
		if err != nil {
			return err
		}
		if st != nil {
			obs.rebuild = env.GetSpec().GetDesiredPhase() == phaseRunning && env.GetSpec().GetRebuildGeneration() > st.Rebuild.Generation
		}
		if len(plan(env.GetSpec().GetDesiredPhase(), obs)) == 0 {
			// One more pass reports the final phase, as the periodic one
			// does.
			_, err := r.reconcile(ctx, w, env)
			return err
		}
	}
	return errors.New("did not converge in 20 passes")
}

// TestCrashRestartConverges kills the runner in each step of create,
// stop, start, rebuild and delete — after the step's effects, with the
// state recording them or not — starts a new runner on the same host, and
// checks that the environment converges to what its spec asks, with
// nothing done twice that must happen once.
func TestCrashRestartConverges(t *testing.T) {
	type transition struct {
		name    string
		compose bool
		from    []func(*covev1.EnvironmentSpec) // the specs the environment converged to first
		to      func(*covev1.EnvironmentSpec)
	}
	run := func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning }
	stop := func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped }
	del := func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseDeleted }
	rebuild := func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning; s.RebuildGeneration++ }
	transitions := []transition{
		{"create", false, nil, run},
		{"stop", false, []func(*covev1.EnvironmentSpec){run}, stop},
		{"start", false, []func(*covev1.EnvironmentSpec){run, stop}, run},
		{"rebuild", false, []func(*covev1.EnvironmentSpec){run}, rebuild},
		{"delete", false, []func(*covev1.EnvironmentSpec){run}, del},
		{"delete stopped", false, []func(*covev1.EnvironmentSpec){run, stop}, del},
		{"compose create", true, nil, run},
		{"compose stop", true, []func(*covev1.EnvironmentSpec){run}, stop},
		{"compose start", true, []func(*covev1.EnvironmentSpec){run, stop}, run},
		{"compose rebuild", true, []func(*covev1.EnvironmentSpec){run}, rebuild},
		{"compose delete", true, []func(*covev1.EnvironmentSpec){run}, del},
	}
	for _, tr := range transitions {
		// Count the steps of an uninterrupted transition.
		steps := func() int {
			c := newCrashWorld(t)
			c.compose = tr.compose
			env := c.env()
			for _, f := range tr.from {
				c.converge(c.runner(0, false), env, f)
			}
			counter := c.runner(0, false)
			n := 0
			for name, sp := range counter.steps {
				counter.steps[name] = crashingStep{sp: sp, crash: func() bool { n++; return false }}
			}
			c.converge(counter, env, tr.to)
			return n
		}()
		if steps == 0 {
			t.Fatalf("%s: no steps", tr.name)
		}
		for k := 1; k <= steps; k++ {
			for _, mid := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/step%d/mid=%v", tr.name, k, mid), func(t *testing.T) {
					c := newCrashWorld(t)
					c.compose = tr.compose
					env := c.env()
					for _, f := range tr.from {
						c.converge(c.runner(0, false), env, f)
					}
					tr.to(env.Spec)
					env.Spec.SpecVersion++
					if err := c.reconcileUntil(c.runner(k, mid), env); !errors.Is(err, errCrash) {
						t.Fatalf("the runner was not killed in step %d: %v", k, err)
					}
					if err := c.reconcileUntil(c.runner(0, false), env); err != nil {
						t.Fatalf("after the restart: %v", err)
					}
					c.check(env)
				})
			}
		}
	}
}

func (c *crashWorld) env() *covev1.Environment {
	return &covev1.Environment{Id: "env1", Metadata: &covev1.EnvironmentMetadata{Name: "dev"},
		Spec: &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: "https://git.invalid/app.git"}}}
}

// converge applies change to env's spec and reconciles to it.
func (c *crashWorld) converge(r *Runner, env *covev1.Environment, change func(*covev1.EnvironmentSpec)) {
	c.t.Helper()
	change(env.Spec)
	env.Spec.SpecVersion++
	if err := c.reconcileUntil(r, env); err != nil {
		c.t.Fatalf("converge: %v", err)
	}
}

// check asserts that the host is what env's spec asks.
func (c *crashWorld) check(env *covev1.Environment) {
	t := c.t
	r := c.runner(0, false)
	lay := r.layout(env.Id)
	st, err := loadState(lay.State())
	cs, devRunning := running(c.rt, env.Id)
	last := c.srv.last[env.Id]
	switch env.Spec.DesiredPhase {
	case phaseRunning:
		if err != nil {
			t.Fatalf("state: %v", err)
		}
		if !devRunning {
			t.Fatalf("container is %s, want running", cs.Status)
		}
		if !c.images.mounted(lay.Rootfs()) {
			t.Error("root file system not mounted")
		}
		if !st.Content.Ready || st.Content.RepoName != "app" || !startedOnce(st) || st.Image.Digest == "" {
			t.Errorf("state incomplete: %+v", st)
		}
		if st.Lifecycle.Pid != cs.Pid {
			t.Errorf("lifecycle ran for pid %d, container is %d", st.Lifecycle.Pid, cs.Pid)
		}
		if st.Rebuild.Generation != env.Spec.RebuildGeneration {
			t.Errorf("built from generation %d, want %d", st.Rebuild.Generation, env.Spec.RebuildGeneration)
		}
		if c.clones != 1 && !(c.clones == 2 && c.crashed == stepClone && c.mid) { // a clone killed before its record runs again
			t.Errorf("cloned %d times, want once (state %+v)", c.clones, st.Content)
		}
		if last.GetPhase() != phaseRunning {
			t.Errorf("last reported phase %s, want RUNNING", last.GetPhase())
		}
		if c.compose {
			if _, ok := running(c.rt, svcID(env.Id, "db")); !ok || !c.images.mounted(lay.Service("db").Rootfs()) {
				t.Error("db service not running on its root file system")
			}
			if st.Image.Compose == nil || len(st.Image.Compose.Services) != 1 {
				t.Errorf("compose state %+v", st.Image.Compose)
			}
		}
		if got := r.ranges.inUse(); len(got) != 2 { // the environment's and the builder's
			t.Errorf("ranges in use %v, want the environment's and the builder's", got)
		}
	case phaseStopped:
		if err != nil {
			t.Fatalf("state: %v", err)
		}
		for _, id := range []string{env.Id, svcID(env.Id, "db")} {
			if s, _ := c.rt.State(context.Background(), id); s.Status != runtime.StatusAbsent {
				t.Errorf("container %s is %s, want absent", id, s.Status)
			}
		}
		if c.images.mounted(lay.Rootfs()) || c.images.mounted(lay.Service("db").Rootfs()) {
			t.Error("root file system still mounted")
		}
		if last.GetPhase() != phaseStopped {
			t.Errorf("last reported phase %s, want STOPPED", last.GetPhase())
		}
	case phaseDeleted:
		if _, err := os.Stat(lay.Dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("environment directory left: %v", err)
		}
		if s, _ := c.rt.State(context.Background(), env.Id); s.Status != runtime.StatusAbsent {
			t.Errorf("container is %s, want absent", s.Status)
		}
		if got := r.ranges.inUse(); len(got) != 1 {
			t.Errorf("ranges in use %v, want only the builder's", got)
		}
	}
}
