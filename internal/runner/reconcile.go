package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/covedev/cove/internal/content"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

const (
	phaseCreating = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_CREATING
	phaseStarting = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STARTING
	phaseRunning  = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING
	phaseStopping = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPING
	phaseStopped  = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED
	phaseDeleting = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETING
	phaseDeleted  = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED

	subPending    = covev1.SubPhase_SUB_PHASE_PENDING
	subInProgress = covev1.SubPhase_SUB_PHASE_IN_PROGRESS
	subReady      = covev1.SubPhase_SUB_PHASE_READY
	subFailed     = covev1.SubPhase_SUB_PHASE_FAILED
)

func (r *Runner) layout(id string) envdir.Layout {
	return envdir.New(r.cfg.DataDir, id)
}

// reconcile brings one environment towards its spec: observe, plan, apply
// the steps, report. It returns done when the environment is deleted and
// the worker can exit. An error means "try again later".
func (r *Runner) reconcile(ctx context.Context, w *worker, env *covev1.Environment) (done bool, err error) {
	desired := env.GetSpec().GetDesiredPhase()
	version := env.GetSpec().GetSpecVersion()
	lay := r.layout(env.Id)
	st, err := loadState(lay.State())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if errors.Is(err, os.ErrNotExist) {
		st = nil
	}
	lay = withDiskLayout(lay, st) // disk.go
	if st != nil && !st.Backup.Reported && len(st.Backup.Last) > 0 {
		reclaimSalvage(env, st) // step_salvage.go: assigned here again
		r.reportBackup(ctx, st) // step_backup.go: one the server has not heard of yet
		if st.Backup.Reported {
			if err := saveState(lay.State(), st); err != nil {
				return false, err
			}
		}
	}
	if st != nil && st.Content.Ready {
		w.sub(&w.content, subReady, "") // also after a runner restart
	}
	w.setDevcontainerPorts(st)

	// A start that failed at this spec version waits for the user (`cove env
	// start` bumps the version); stop and delete always proceed.
	if st != nil && desired == phaseRunning && st.Failure.SpecVersion == version {
		obs, err := r.observe(ctx, env.Id, st)
		if err != nil {
			return false, err
		}
		if steps := plan(phaseStopped, obs); len(steps) > 0 {
			return false, r.apply(ctx, &stepEnv{env: env, lay: lay, st: st, rep: w.reporter(ctx, phaseStopped, func(ph covev1.EnvironmentPhase) *covev1.EnvironmentStatus { return r.status(env, st, ph, "") })}, steps)
		}
		return false, w.setStatus(ctx, r.status(env, st, phaseStopped, st.Failure.Message))
	}

	obs, err := r.observe(ctx, env.Id, st)
	if err != nil {
		return false, err
	}
	obs.rebuild = st != nil && desired == phaseRunning && env.GetSpec().GetRebuildGeneration() > st.Rebuild.Generation
	backupObserve(env, st, &obs) // step_backup.go
	if w.isOrphaned() {
		obs.backup = false // the server refuses this runner its backups (orphan.go)
	}
	steps := plan(desired, obs)
	if len(steps) == 0 {
		final := map[covev1.EnvironmentPhase]covev1.EnvironmentPhase{phaseRunning: phaseRunning, phaseStopped: phaseStopped, phaseDeleted: phaseDeleted}[desired]
		if final == phaseRunning {
			w.setRunning(true)
			w.sub(&w.machine, subReady, "")
		} else {
			w.setRunning(false)
			if final == phaseStopped {
				w.sub(&w.machine, subPending, "stopped")
			}
		}
		if err := w.setStatus(ctx, r.status(env, st, final, "")); err != nil {
			return false, err
		}
		if final == phaseRunning {
			r.backupRunning(ctx, w, env, st) // backup_running.go: periodic or manual
		}
		return final == phaseDeleted, nil
	}

	transitional := map[covev1.EnvironmentPhase]covev1.EnvironmentPhase{phaseRunning: phaseStarting, phaseStopped: phaseStopping, phaseDeleted: phaseDeleting}[desired]
	if transitional == phaseStarting && !startedOnce(st) {
		transitional = phaseCreating
	}
	if obs.rebuild {
		transitional = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_UPDATING
	}
	if desired != phaseRunning || obs.rebuild {
		// A rebuild reinstalls features whose result may be cached for
		// others: nobody gets in until its waitFor stage is done, as on a
		// first create.
		w.setRunning(false)
	}
	if desired == phaseRunning {
		w.sub(&w.machine, subInProgress, "starting")
	}
	if slices.Contains(steps, stepLifecycle) {
		lifecyclePending(st) // step_lifecycle.go: status.lifecycle is no longer the last run's
	}
	// The transitional phase goes out in the background: the steps need not
	// wait for the server.
	w.progress(ctx, r.status(env, st, transitional, ""))
	r.log.Info("reconcile", "env", env.Id, "desired", desired, "steps", steps)
	stepCtx, cancel := context.WithCancel(ctx)
	w.setStepCancel(version, cancel)
	defer w.setStepCancel(0, nil)
	defer cancel()
	e := &stepEnv{env: env, lay: lay, st: st}
	e.rep = w.reporter(ctx, transitional, func(ph covev1.EnvironmentPhase) *covev1.EnvironmentStatus {
		w.setDevcontainerPorts(e.st) // forwardPorts as soon as the image step resolved them
		return r.status(env, e.st, ph, "")
	})
	err = r.apply(stepCtx, e, steps)
	st = e.st
	w.setDevcontainerPorts(st) // the image step may just have resolved them
	if err != nil {
		msg, visible := usererr.Message(err)
		retry := errdefs.Retryable(err)
		if visible && retry && desired == phaseRunning && w.countRetry(version) > maxStartRetries {
			// What may heal has not healed: stop waiting (a registry or
			// server that keeps failing is someone's to fix, and retrying
			// a build forever loads the shared builder).
			retry = false
			msg += fmt.Sprintf(" (gave up after %d attempts; `cove env start` tries again)", maxStartRetries)
		}
		if !visible || desired != phaseRunning || st == nil || retry {
			// Internal errors, failures that may heal on their own (a
			// registry or git server unreachable) and any stop/delete error
			// are retried with backoff; the sub-status says so, so nobody
			// waits without knowing why.
			r.log.Error("reconcile step failed", "env", env.Id, "err", err, "category", errdefs.CategoryOf(err))
			w.sub(&w.machine, subInProgress, retryMessage(err, w.retryDelay()))
			_ = w.setStatus(ctx, r.status(env, st, transitional, ""))
			return false, err
		}
		// A start failed for a reason the user must fix: record it, put the
		// environment in a clear STOPPED state, keep everything on disk.
		r.log.Warn("environment failed to start", "env", env.Id, "reason", msg, "err", err)
		st.Failure = failureState{SpecVersion: version, Message: msg}
		if err := saveState(lay.State(), st); err != nil {
			return false, err
		}
		w.kickSoon()
		return false, nil
	}
	if last := steps[len(steps)-1]; desired == phaseRunning && (last == stepWaitAgent || last == stepLifecycle) {
		w.resetRetries()
		// The agent just answered: the environment is running. Report it now
		// rather than after another observe pass; the periodic pass checks.
		w.setRunning(true)
		w.sub(&w.machine, subReady, "")
		return false, w.setStatus(ctx, r.status(env, st, phaseRunning, ""))
	}
	w.resetRetries()
	// Observe again: the next pass reports the final phase.
	w.kickSoon()
	return false, nil
}

// maxStartRetries is how many times a start that failed for a reason that
// may heal (a registry unreachable) is retried, with the worker's backoff
// (1 s doubling to 30 s: about 5 minutes), before the failure is recorded.
const maxStartRetries = 12

func (w *worker) kickSoon() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// status builds the status the runner reports.
func (r *Runner) status(env *covev1.Environment, st *envState, phase covev1.EnvironmentPhase, failure string) *covev1.EnvironmentStatus {
	s := &covev1.EnvironmentStatus{
		Phase:               phase,
		ObservedSpecVersion: env.GetSpec().GetSpecVersion(),
		FailureMessage:      failure,
	}
	if st != nil {
		s.Image, s.ImageDigest = st.Image.Ref, st.Image.Digest
		if st.Content.RepoName != "" {
			s.WorkspaceFolder = "/workspaces/" + st.Content.RepoName
		}
		s.IpAddress = st.Network.IP
		s.BuiltGeneration = st.Rebuild.Generation
		if dc := st.Image.DC; dc != nil {
			s.DevcontainerPath, s.Warnings, s.Extensions, s.CustomizationsJson = dc.ConfigPath, dc.Warnings, dc.Extensions, dc.Customizations
			if dc.WorkspaceFolder != "" {
				s.WorkspaceFolder = dc.WorkspaceFolder
			}
			s.DevcontainerName = dc.Name
			if !featuresPending(st) {
				s.Features = featuresStatus(dc.Features)
			}
		}
		s.Volumes = volumesStatus(withDiskLayout(r.layout(env.Id), st).Workspace(), st)
	}
	s.Lifecycle = lifecycleStatus(st) // step_lifecycle.go
	backupStatus(s, st)               // step_backup.go
	if phase == phaseRunning {
		s.Ssh = &covev1.SSHAddress{Address: r.sshAddr, Host: env.GetMetadata().GetName() + ".cove"}
	}
	return s
}

// observe reads what exists on the host for environment id.
func (r *Runner) observe(ctx context.Context, id string, st *envState) (observed, error) {
	lay := r.layout(id)
	o := observed{stateExists: st != nil, diskMounted: diskMounted(lay)}
	o.diskDown = st != nil && st.Disk.Bytes > 0 && !o.diskMounted
	if st != nil {
		o.contentReady = st.Content.Ready
		o.imageReady = st.Image.Digest != "" && r.images.has(st.Image.Layers)
	}
	o.rootfsMounted = r.images.mounted(lay.Rootfs())
	o.someMounted = o.rootfsMounted
	if st != nil && st.Image.Compose != nil {
		for _, s := range st.Image.Compose.Services {
			m := r.images.mounted(lay.Service(s.Name).Rootfs())
			o.rootfsMounted = o.rootfsMounted && m
			o.someMounted = o.someMounted || m
			o.imageReady = o.imageReady && r.images.has(s.Layers)
		}
	}
	cs, err := r.rt.State(ctx, id)
	if err != nil {
		return o, fmt.Errorf("runtime state: %w", err)
	}
	if o.container, err = r.servicesStatus(ctx, id, st, cs.Status); err != nil {
		return o, fmt.Errorf("runtime state: %w", err)
	}
	if o.container == runtime.StatusRunning {
		if _, err := os.Lstat(lay.AgentSocket()); err != nil {
			// Started by an older runner, whose agent listens inside the
			// environment: restart it with a socket only the runner reaches.
			o.container = runtime.StatusStopped
			return o, nil
		}
		o.agentReady = r.agents.probe(ctx, r.agentEndpoint(id)) == nil
		o.devcontainerDone = st == nil || (st.Image.DC == nil || st.Lifecycle.Pid == cs.Pid) && !st.Features.RestartPending
	}
	return o, nil
}

// isLocalSource reports whether url names a path on this host, by the one
// classification content.Clone and the server share (schemes compared
// case-insensitively); sources it refuses fail in content.Clone.
func isLocalSource(url string) bool {
	local, _ := content.ClassifySource(url)
	return local
}

// failureState is the reconcile loop's section: a start that failed for a
// reason the user must fix, at a spec version, is not retried until the
// spec changes (`cove env start` bumps it).
type failureState struct {
	SpecVersion int64  `json:"specVersion,omitempty"`
	Message     string `json:"message,omitempty"`
}

// startedOnce reports whether the environment has started before
// (STARTING rather than CREATING): recorded by the start step, or implied
// by lifecycle commands having run in a container of it (a runner killed
// between a start and its record).
func startedOnce(st *envState) bool {
	return st != nil && (st.Start.StartedOnce || st.Lifecycle.Pid != 0)
}

// retryMessage is the machine sub-status while a failed step waits to be
// retried: the error's message when users may see it ("registry
// unreachable: …, retrying in 8s"), else the error.
func retryMessage(err error, in time.Duration) string {
	if msg, ok := usererr.Message(err); ok {
		return fmt.Sprintf("%s, retrying in %s", msg, in.Round(time.Second))
	}
	return "retrying after error: " + err.Error()
}
