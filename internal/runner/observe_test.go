package runner

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/covedev/cove/internal/agent"
	"github.com/covedev/cove/internal/agent/agenttest"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

func TestQuietSkipsObserve(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	running := &covev1.Environment{Spec: &covev1.EnvironmentSpec{DesiredPhase: phaseRunning}}
	stopped := &covev1.Environment{Spec: &covev1.EnvironmentSpec{DesiredPhase: phaseStopped}}
	for _, c := range []struct {
		name      string
		env       *covev1.Environment
		running   bool
		obs       observeState
		connected time.Time
		at        time.Time
		want      bool
	}{
		{"running, stream up before the pass", running, true, observeState{fullAt: t0, ok: true}, t0.Add(-time.Second), t0.Add(observeEvery), true},
		{"running, stream up as the pass began", running, true, observeState{fullAt: t0, ok: true}, t0, t0.Add(observeEvery), true},
		{"running, no stream", running, true, observeState{fullAt: t0, ok: true}, time.Time{}, t0.Add(observeEvery), false},
		{"running, stream (re)connected after the pass", running, true, observeState{fullAt: t0, ok: true}, t0.Add(time.Second), t0.Add(observeEvery), false},
		{"running, compose services", running, true, observeState{fullAt: t0, ok: true, siblings: true}, t0.Add(-time.Second), t0.Add(observeEvery), false},
		{"running, last pass failed", running, true, observeState{fullAt: t0}, t0.Add(-time.Second), t0.Add(observeEvery), false},
		{"running, full pass due", running, true, observeState{fullAt: t0, ok: true}, t0.Add(-time.Second), t0.Add(observeFull), false},
		{"wanted running, agent not reachable", running, false, observeState{fullAt: t0, ok: true}, time.Time{}, t0.Add(observeEvery), false},
		{"stopped", stopped, false, observeState{fullAt: t0, ok: true}, time.Time{}, t0.Add(observeEvery), true},
		{"stopping, still running", stopped, true, observeState{fullAt: t0, ok: true}, t0.Add(-time.Second), t0.Add(observeEvery), false},
		{"stopped, full pass due", stopped, false, observeState{fullAt: t0, ok: true}, time.Time{}, t0.Add(observeFull), false},
	} {
		w := &worker{r: &Runner{}, env: c.env, running: c.running, obs: c.obs}
		w.ports.connectedAt = c.connected
		if got := w.quiet(c.at); got != c.want {
			t.Errorf("%s: quiet = %v, want %v", c.name, got, c.want)
		}
	}
}

// When the agent (the container's PID 1) goes away, its ports stream ends
// and the worker is kicked for a full pass at once: the periodic pass may
// skip observing a running environment only because of that.
func TestLostPortsStreamKicksWorker(t *testing.T) {
	rec := &statusRecorder{got: make(chan *covev1.EnvironmentStatus, 100)}
	path, h := covev1connect.NewRunnerServiceHandler(rec)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	dir := t.TempDir()
	keys, err := loadAgentKeys(dir)
	must(t, err)
	r := &Runner{
		cfg: Config{DataDir: dir}, log: slog.New(slog.DiscardHandler), keys: keys,
		client: &client{api: covev1connect.NewRunnerServiceClient(srv.Client(), srv.URL)},
	}
	const id = "env1"
	sock := r.layout(id).AgentSocket()
	etc := filepath.Join(dir, "etc")
	must(t, os.MkdirAll(filepath.Dir(sock), 0o700))
	must(t, os.MkdirAll(etc, 0o700))
	must(t, keys.write(etc, id, uint32(os.Getuid())))
	ag := agenttest.Start(t, agenttest.Options{Socket: sock, ClientKey: keys.client(id), HostKey: keys.derive("host", id),
		Config: agent.Config{AuthorizedKeysPath: filepath.Join(etc, "runner_keys"), HostKeyPath: filepath.Join(etc, "host_key")}})

	// A worker without its loop: the test takes the kicks.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &worker{r: r, id: id, ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1),
		env: &covev1.Environment{Id: id, Spec: &covev1.EnvironmentSpec{DesiredPhase: phaseRunning}}}
	w.obs = observeState{fullAt: time.Now(), ok: true}
	w.setRunning(true)
	testutil.WaitNoError(t, "the ports stream", func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.ports.connectedAt.IsZero() {
			return errors.New("not connected")
		}
		return nil
	})
	// Connected after the pass: a full pass is still due once.
	if w.quiet(time.Now()) {
		t.Error("quiet although the stream connected after the last full pass")
	}
	w.passDone(time.Now(), true)
	if !w.quiet(time.Now()) {
		t.Fatal("not quiet with the stream up since the last full pass")
	}
	select {
	case <-w.kick:
		t.Fatal("kicked while the agent is up")
	default:
	}

	// The container exits: its agent goes.
	if err := ag.Stop(t); err != nil {
		t.Logf("agent stop: %v", err)
	}
	testutil.Receive(t, w.kick, "the worker to be kicked after the agent went away")
	if w.quiet(time.Now()) {
		t.Error("quiet after the agent went away")
	}
	w.mu.Lock()
	done := w.ports.done
	w.mu.Unlock()
	w.setRunning(false)
	testutil.Receive(t, done, "the port watch to end")
}

// firedClock is a clock whose waits of observeEvery the test ends, one at
// a time; other waits never end.
type firedClock struct {
	stepClock
	waits chan chan time.Time
}

func (c *firedClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	if d == observeEvery {
		c.waits <- ch
	}
	return ch
}

// next waits until the periodic pass waits (its previous round is over).
func (c *firedClock) next(t *testing.T) chan time.Time {
	t.Helper()
	return testutil.Receive(t, c.waits, "the periodic pass to wait")
}

// fire moves the clock on by observeEvery and ends the wait ch.
func (c *firedClock) fire(ch chan time.Time) {
	c.add(observeEvery)
	ch <- c.Now()
}

// The periodic pass of a quiet environment neither observes it (no kick,
// so no runc state and no handshake) nor reports anything unchanged; it
// re-sends the status when the port proxy's activity moved, and kicks a
// full pass once the agent's stream is gone.
func TestPeriodicQuietPass(t *testing.T) {
	_, w, rec, _ := usageRunner(t)
	clk := &firedClock{stepClock: stepClock{now: time.Unix(1e9, 0)}, waits: make(chan chan time.Time)}
	w.r.clock = clk
	kicked := func() bool {
		select {
		case <-w.kick:
			return true
		default:
			return false
		}
	}
	w.mu.Lock()
	w.env = &covev1.Environment{Id: "env1", Spec: &covev1.EnvironmentSpec{DesiredPhase: phaseRunning}}
	w.ports.connectedAt = clk.Now().Add(-time.Second)
	w.mu.Unlock()
	pass := w.passDone(clk.Now(), true)
	done := make(chan struct{})
	go func() { defer close(done); w.periodic(pass) }()

	wait := clk.next(t)
	for range 2 {
		clk.fire(wait)
		wait = clk.next(t) // the round is over
	}
	if kicked() {
		t.Fatal("quiet environment kicked for a full pass")
	}
	select {
	case st := <-rec.got:
		t.Errorf("nothing changed, but reported %v", st)
	default:
	}

	// Activity through the port proxy goes out with the next quiet round.
	w.r.touch(w.id, 3000) // activity.go: reported at once
	clk.fire(wait)
	wait = clk.next(t)
	st := testutil.Receive(t, rec.got, "the status with the activity")
	if st.GetActivity().GetLastActive() == nil || st.GetPhase() != phaseRunning {
		t.Errorf("re-sent status %v", st)
	}
	if kicked() {
		t.Fatal("kicked for activity")
	}

	// The agent's stream ends (followPorts clears connectedAt, and kicks
	// itself; here only the clearing): the next round kicks a full pass.
	w.mu.Lock()
	w.ports.connectedAt = time.Time{}
	w.mu.Unlock()
	clk.fire(wait)
	testutil.Receive(t, done, "the periodic pass to end")
	if !kicked() {
		t.Error("no full pass after the agent's stream ended")
	}
}

// A newer pass ends the periodic goroutine of an older one without a kick.
func TestPeriodicStalePassEnds(t *testing.T) {
	_, w, _, _ := usageRunner(t)
	clk := &firedClock{stepClock: stepClock{now: time.Unix(1e9, 0)}, waits: make(chan chan time.Time)}
	w.r.clock = clk
	pass := w.passDone(clk.Now(), true) // not quiet: no stream
	done := make(chan struct{})
	go func() { defer close(done); w.periodic(pass) }()
	wait := clk.next(t)
	w.passDone(clk.Now(), false)
	clk.fire(wait)
	testutil.Receive(t, done, "the stale periodic pass to end")
	select {
	case <-w.kick:
		t.Error("a stale periodic pass kicked")
	default:
	}
}
