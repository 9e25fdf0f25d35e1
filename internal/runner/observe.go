package runner

import "time"

// The worker re-observes its environment after each pass: a container may
// exit on its own. A full observe costs a `runc state` process (about 7 ms
// of CPU here) and an SSH handshake with the agent; every 10 s for every
// environment, that was most of what an idle environment cost the host.
//
// So a pass is full only when something may have changed unseen:
//
//   - a running environment without sibling (Docker Compose) containers
//     whose agent's ports stream has stayed connected since the last full
//     pass needs none: the agent is the container's PID 1, so the container
//     exiting ends the stream, and followPorts then kicks the worker at once
//     (sooner than the 10 s this used to take). Every observeEvery the pass
//     only re-sends the status if something in it changed (the port proxy's
//     activity, say).
//   - a stopped or deleted environment whose last pass succeeded has no
//     container that could change on its own.
//   - anything else (starting, failed, compose services, no ports stream)
//     gets a full pass every observeEvery, as before; and every environment
//     a full one every observeFull, whatever the above says.
const (
	observeEvery = 10 * time.Second
	observeFull  = 5 * time.Minute
)

// observeState is the worker's record of its passes, guarded by worker.mu.
type observeState struct {
	pass     uint64    // passes completed; a periodic goroutine serves one
	fullAt   time.Time // when the last pass started
	ok       bool      // it succeeded
	siblings bool      // the environment has sibling containers (compose services)
}

// passDone records a pass that started at began and returns its number.
func (w *worker) passDone(began time.Time, ok bool) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.obs.pass++
	w.obs.fullAt, w.obs.ok = began, ok
	return w.obs.pass
}

// quiet reports whether the next periodic pass may skip observing.
func (w *worker) quiet(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	o := w.obs
	if !o.ok || now.Sub(o.fullAt) >= observeFull || w.backupDueLocked(now) {
		return false
	}
	if w.env.GetSpec().GetDesiredPhase() != phaseRunning {
		return !w.running
	}
	connected := w.ports.connectedAt
	return w.running && !o.siblings && !connected.IsZero() && !connected.After(o.fullAt)
}

// periodic kicks a full pass after observeEvery, unless the environment is
// quiet: then it only re-sends the status if it changed, and waits again.
// It ends when a newer pass than pass ran, or with the worker.
func (w *worker) periodic(pass uint64) {
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-w.r.clock.After(observeEvery):
		}
		w.mu.Lock()
		stale := w.obs.pass != pass
		w.mu.Unlock()
		if stale {
			return
		}
		if !w.quiet(w.r.clock.Now()) {
			w.kickNow()
			return
		}
		var pending bool
		w.resendRunning(w.ctx, &pending, "status")
	}
}

// now is the runner's clock's time (the real time for a runner built
// without one, in tests).
func (w *worker) now() time.Time {
	if w.r.clock == nil {
		return time.Now()
	}
	return w.r.clock.Now()
}

// kickNow wakes the worker's loop for a pass.
func (w *worker) kickNow() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}
