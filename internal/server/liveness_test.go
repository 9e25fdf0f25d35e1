package server_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// hookedStore runs a hook once, right after the store call it is armed
// for: a heartbeat arriving at the worst moment of a liveness pass.
type hookedStore struct {
	store.Store
	mu                       sync.Mutex
	afterList, afterInactive func()
}

func (h *hookedStore) take(f *func()) func() {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := *f
	*f = nil
	return g
}

func (h *hookedStore) ListRunners(ctx context.Context) ([]store.Runner, error) {
	rs, err := h.Store.ListRunners(ctx)
	if f := h.take(&h.afterList); f != nil {
		f()
	}
	return rs, err
}

func (h *hookedStore) MarkRunnerInactive(ctx context.Context, id string, seenBefore time.Time) (bool, error) {
	ok, err := h.Store.MarkRunnerInactive(ctx, id, seenBefore)
	if f := h.take(&h.afterInactive); f != nil {
		f()
	}
	return ok, err
}

func hookedWorld(t *testing.T) (*backupWorld, *hookedStore) {
	var hs *hookedStore
	w := newBackupWorld(t, func(c *server.Config) {
		hs = &hookedStore{Store: c.Store}
		c.Store = hs
	})
	return w, hs
}

func runnerPhase(t *testing.T, w *backupWorld, id string) covev1.RunnerPhase {
	t.Helper()
	r, err := w.store.GetRunner(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r.Phase
}

// TestHeartbeatDuringLivenessPassWins: a runner late with its heartbeat,
// whose heartbeat arrives after the liveness pass read the runners and
// before it marked them, stays ACTIVE. The pass used to write the runner it
// had read back as INACTIVE over the heartbeat, and the runner stayed
// INACTIVE (and its environments open to rescheduling) while connected.
func TestHeartbeatDuringLivenessPassWins(t *testing.T) {
	w, hs := hookedWorld(t)
	w.advance(2 * time.Hour) // past the runner timeout (1 h)
	hs.mu.Lock()
	hs.afterList = func() { w.heartbeat(t, w.r1) }
	hs.mu.Unlock()
	if err := server.RunnersOnce(context.Background(), w.h.srv); err != nil {
		t.Fatal(err)
	}
	if hs.take(&hs.afterList) != nil {
		t.Fatal("the hook never ran: the pass did not list the runners")
	}
	if p := runnerPhase(t, w, w.id1); p != covev1.RunnerPhase_RUNNER_PHASE_ACTIVE {
		t.Fatalf("r1 is %v after a heartbeat that came in during the pass; want ACTIVE", p)
	}
	if p := runnerPhase(t, w, w.id2); p != covev1.RunnerPhase_RUNNER_PHASE_INACTIVE {
		t.Fatalf("r2, silent for 2 h, is %v; want INACTIVE", p)
	}
}

// TestHeartbeatWhileLostMessagesAreWrittenClearsThem: a heartbeat that
// arrives after the pass marked the runner INACTIVE and before it wrote
// "runner lost" on its environments leaves no such message behind.
func TestHeartbeatWhileLostMessagesAreWrittenClearsThem(t *testing.T) {
	w, hs := hookedWorld(t)
	env := w.running(t, w.alice, "work")
	r := w.runner(t, env)
	w.advance(2 * time.Hour)
	hs.mu.Lock()
	hs.afterInactive = func() { w.heartbeat(t, r) }
	hs.mu.Unlock()
	if err := server.RunnersOnce(context.Background(), w.h.srv); err != nil {
		t.Fatal(err)
	}
	if hs.take(&hs.afterInactive) != nil {
		t.Fatal("the hook never ran: no runner was marked INACTIVE")
	}
	if p := runnerPhase(t, w, env.GetMetadata().GetRunnerId()); p != covev1.RunnerPhase_RUNNER_PHASE_ACTIVE {
		t.Fatalf("the environment's runner is %v after its heartbeat; want ACTIVE", p)
	}
	got, err := w.store.GetEnvironment(context.Background(), env.Id)
	if err != nil {
		t.Fatal(err)
	}
	if m := got.GetStatus().GetFailureMessage(); strings.Contains(m, "lost") {
		t.Fatalf("failure message %q on an environment whose runner is back", m)
	}
}
