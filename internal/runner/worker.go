package runner

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/covedev/cove/internal/envconfig"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
)

// worker runs one environment's reconcile loop. It is the only writer of
// that environment's status.
type worker struct {
	r      *Runner
	id     string
	ctx    context.Context
	cancel context.CancelFunc
	kick   chan struct{}

	// sendMu orders reports; seq numbers status intents so a progress
	// report never lands after a newer status.
	sendMu sync.Mutex
	seq    uint64

	// stepCancel cancels long steps (lifecycle commands) when a newer spec
	// arrives, e.g. a stop during a long postCreateCommand.
	stepVersion int64
	stepCancel  context.CancelFunc

	mu      sync.Mutex
	retryIn time.Duration // the wait before the next pass if this one fails
	// retries counts the failed passes that may heal at retryVersion.
	retries      int
	retryVersion int64
	act          activityState // users' activity, for auto-stop (activity.go)
	env          *covev1.Environment
	running      bool // agent reachable: the gateway may route to it
	reported     *covev1.EnvironmentStatus
	content      *covev1.SubStatus
	machine      *covev1.SubStatus
	devc         *covev1.SubStatus // devcontainer: features, lifecycle; nil until known
	dcPorts      *envconfig.Ports  // devcontainer.json forwardPorts/portsAttributes
	ports        portWatch         // listening ports while running (ports.go)
	obs          observeState      // passes, for the periodic re-observe (observe.go)
	usage        usageState        // resource usage while running (usage.go)
	backupAt     time.Time         // the next periodic backup (backup_running.go)
	orphaned     bool              // the server refused it as not this runner's (orphan.go)
}

func (r *Runner) newWorker(ctx context.Context, id string) *worker {
	ctx, cancel := context.WithCancel(ctx)
	w := &worker{r: r, id: id, ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1),
		content: &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_PENDING},
		machine: &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_PENDING}}
	go w.loop()
	return w
}

// update hands the worker the environment's latest state from the server.
// Only a new spec wakes the loop: the status this runner reports comes
// back through the same watch, and waking on it would retry a failed pass
// at once instead of after its backoff.
func (w *worker) update(env *covev1.Environment) {
	w.mu.Lock()
	prev := w.env
	w.env = env
	w.orphaned = false // the server speaks of it again (orphan.go)
	if w.stepCancel != nil && env.GetSpec().GetSpecVersion() != w.stepVersion {
		w.stepCancel()
	}
	w.mu.Unlock()
	w.armWarning() // activity.go: timeouts, leases or the start may have moved
	if prev != nil && proto.Equal(prev.GetSpec(), env.GetSpec()) {
		return
	}
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *worker) setStepCancel(version int64, cancel context.CancelFunc) {
	w.mu.Lock()
	w.stepVersion, w.stepCancel = version, cancel
	w.mu.Unlock()
}

func (w *worker) latest() *covev1.Environment {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.env
}

func (w *worker) setRunning(v bool) {
	w.mu.Lock()
	w.running = v
	w.mu.Unlock()
	w.watchPorts(v) // ports.go
}

// countRetry counts one more failed pass at spec version v and returns
// how many there were at v.
func (w *worker) countRetry(v int64) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.retryVersion != v {
		w.retryVersion, w.retries = v, 0
	}
	w.retries++
	return w.retries
}

// resetRetries forgets failed passes: a pass succeeded.
func (w *worker) resetRetries() {
	w.mu.Lock()
	w.retries = 0
	w.mu.Unlock()
}

// setDevcontainerPorts reports devcontainer.json's forwardPorts and
// portsAttributes with every status from now on (none without a resolved
// configuration). Called with the state at the start of every pass, it also
// notes whether the environment has sibling (compose service) containers,
// which its agent's ports stream does not watch (observe.go).
func (w *worker) setDevcontainerPorts(st *envState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if st != nil && st.Image.DC != nil {
		w.dcPorts = &st.Image.DC.Ports
	}
	w.obs.siblings = st != nil && st.Image.Compose != nil && len(st.Image.Compose.Services) > 0
}

// retryDelay is how long the loop waits before it retries a failed pass.
func (w *worker) retryDelay() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.retryIn == 0 {
		return time.Second
	}
	return w.retryIn
}

func (w *worker) isRunning() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.running
}

func (w *worker) loop() {
	log := w.r.log.With("env", w.id)
	backoff := time.Second
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-w.kick:
		}
		for {
			env := w.latest()
			w.mu.Lock()
			w.retryIn = backoff
			w.mu.Unlock()
			began := w.r.clock.Now()
			done, err := w.r.reconcile(w.ctx, w, env)
			pass := w.passDone(began, err == nil) // observe.go
			if done {
				log.Info("environment deleted; worker exits")
				w.r.forget(w.id)
				w.cancel()
				return
			}
			if err == nil {
				backoff = time.Second
				// Re-observe periodically: a container may exit on its own.
				go w.periodic(pass)
				break
			}
			if w.ctx.Err() != nil {
				return
			}
			if w.deletedUnheard(err, env) { // orphan.go
				log.Warn("environment deleted here; the server refused the report as not this runner's (it left this runner): worker exits", "err", err)
				w.r.forget(w.id)
				w.cancel()
				return
			}
			if w.orphan(err) { // orphan.go: stop it, report nothing
				log.Warn("the server refused this runner's report: the environment is no longer assigned here (moved to another runner, or deleted while this runner was away); stopping it, keeping its files until the server says to delete them", "err", err)
				continue
			}
			wait := backoff
			var ra *retryAtError // step_salvage.go: not before then
			if errors.As(err, &ra) {
				wait = max(ra.at.Sub(w.r.clock.Now()), time.Second)
			}
			log.Warn("reconcile failed; retrying", "err", err, "in", wait)
			select {
			case <-w.ctx.Done():
				return
			case <-w.kick:
			case <-w.r.clock.After(wait):
			}
			backoff = min(backoff*2, 30*time.Second)
		}
	}
}

// setStatus reports st to the server unless it is what was reported last.
func (w *worker) setStatus(ctx context.Context, st *covev1.EnvironmentStatus) error {
	w.mu.Lock()
	w.seq++
	w.mu.Unlock()
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	return w.send(ctx, st)
}

// progress reports st in the background (sub-status changes during long
// steps) without delaying the step; it is dropped if a newer status was
// reported meanwhile.
func (w *worker) progress(ctx context.Context, st *covev1.EnvironmentStatus) {
	w.mu.Lock()
	w.seq++
	mine := w.seq
	w.mu.Unlock()
	go func() {
		w.sendMu.Lock()
		defer w.sendMu.Unlock()
		w.mu.Lock()
		stale := w.seq != mine
		w.mu.Unlock()
		if stale {
			return
		}
		if err := w.send(ctx, st); err != nil && ctx.Err() == nil {
			w.r.log.Debug("progress report failed", "env", w.id, "err", err)
		}
	}()
}

// send reports st (with the current sub-statuses); callers hold sendMu.
func (w *worker) send(ctx context.Context, st *covev1.EnvironmentStatus) error {
	w.mu.Lock()
	st.Content = proto.Clone(w.content).(*covev1.SubStatus)
	st.Machine = proto.Clone(w.machine).(*covev1.SubStatus)
	if w.devc != nil {
		st.Devcontainer = proto.Clone(w.devc).(*covev1.SubStatus)
	}
	w.decoratePorts(st)    // ports.go
	w.decorateUsage(st)    // usage.go
	w.decorateActivity(st) // activity.go
	same := w.reported != nil && proto.Equal(w.reported, st)
	orphaned := w.orphaned
	w.mu.Unlock()
	if same || orphaned {
		return nil
	}
	if _, err := w.r.report(ctx, w.id, st); err != nil {
		return err
	}
	w.mu.Lock()
	w.reported = st
	w.mu.Unlock()
	return nil
}

func (w *worker) sub(s **covev1.SubStatus, phase covev1.SubPhase, msg string) {
	w.mu.Lock()
	*s = &covev1.SubStatus{Phase: phase, Message: msg}
	w.mu.Unlock()
}

// reporter is the worker as a step's reporter: sub-status changes go out
// in the background in phase; ready reports RUNNING.
func (w *worker) reporter(ctx context.Context, phase covev1.EnvironmentPhase, status func(covev1.EnvironmentPhase) *covev1.EnvironmentStatus) reporter {
	return &workerReporter{w: w, ctx: ctx, phase: phase, status: status}
}

type workerReporter struct {
	w      *worker
	ctx    context.Context
	status func(covev1.EnvironmentPhase) *covev1.EnvironmentStatus

	mu    sync.Mutex
	phase covev1.EnvironmentPhase // the transitional phase until ready
}

func (p *workerReporter) sub(which subStatus, phase covev1.SubPhase, msg string) {
	w := p.w
	switch which {
	case subContent:
		w.sub(&w.content, phase, msg)
	case subMachine:
		w.sub(&w.machine, phase, msg)
	case subDevcontainer:
		w.sub(&w.devc, phase, msg)
	}
	p.mu.Lock()
	envPhase := p.phase
	p.mu.Unlock()
	w.progress(p.ctx, p.status(envPhase))
}

// ready: the devcontainer's waitFor stage is done; later lifecycle
// commands go on while users can connect. From here on the environment is
// RUNNING: a later sub-status change never reports the transitional phase
// again (a client that saw RUNNING must not see UPDATING after it).
func (p *workerReporter) ready() {
	w := p.w
	w.setRunning(true)
	w.sub(&w.machine, subReady, "")
	p.mu.Lock()
	p.phase = phaseRunning
	p.mu.Unlock()
	w.progress(p.ctx, p.status(phaseRunning))
}
