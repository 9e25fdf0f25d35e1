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
