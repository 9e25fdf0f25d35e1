package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/covedev/cove/internal/content"
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

func (r *Runner) layout(id string) layout {
	return layout{filepath.Join(r.cfg.DataDir, "envs", id)}
}

// reconcile brings one environment towards its spec: observe, plan, apply
// the steps, report. It returns done when the environment is deleted and
// the worker can exit. An error means "try again later".
func (r *Runner) reconcile(ctx context.Context, w *worker, env *covev1.Environment) (done bool, err error) {
	desired := env.GetSpec().GetDesiredPhase()
	version := env.GetSpec().GetSpecVersion()
	lay := r.layout(env.Id)
	st, err := loadState(lay.state())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if errors.Is(err, os.ErrNotExist) {
		st = nil
	}
	if st != nil && st.ContentReady {
		w.sub(&w.content, subReady, "") // also after a runner restart
	}
	if st != nil && st.DC != nil {
		w.mu.Lock()
		w.dcPorts = &st.DC.Ports
		w.mu.Unlock()
	}

	// A start that failed at this spec version waits for the user (`cove env
	// start` bumps the version); stop and delete always proceed.
	if st != nil && desired == phaseRunning && st.FailedSpecVersion == version {
		obs, err := r.observe(ctx, env.Id, st)
		if err != nil {
			return false, err
		}
		if len(plan(phaseStopped, obs)) > 0 {
			return false, r.apply(ctx, w, env, &st, plan(phaseStopped, obs), func() {}, func() {})
		}
		return false, w.setStatus(ctx, r.status(env, st, phaseStopped, st.FailureMessage))
	}

	obs, err := r.observe(ctx, env.Id, st)
	if err != nil {
		return false, err
	}
	obs.rebuild = st != nil && desired == phaseRunning && env.GetSpec().GetRebuildGeneration() > st.BuiltGeneration
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
		return final == phaseDeleted, nil
	}

	transitional := map[covev1.EnvironmentPhase]covev1.EnvironmentPhase{phaseRunning: phaseStarting, phaseStopped: phaseStopping, phaseDeleted: phaseDeleting}[desired]
	if transitional == phaseStarting && (st == nil || !st.StartedOnce) {
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
	// The transitional phase goes out in the background: the steps need not
	// wait for the server.
	w.progress(ctx, r.status(env, st, transitional, ""))
	r.log.Info("reconcile", "env", env.Id, "desired", desired, "steps", steps)
	progress := func() { w.progress(ctx, r.status(env, st, transitional, "")) }
	// ready: the devcontainer's waitFor stage is done; later lifecycle
	// commands go on while users can connect.
	ready := func() {
		w.setRunning(true)
		w.sub(&w.machine, subReady, "")
		w.progress(ctx, r.status(env, st, phaseRunning, ""))
	}
	stepCtx, cancel := context.WithCancel(ctx)
	w.setStepCancel(version, cancel)
	defer w.setStepCancel(0, nil)
	defer cancel()
	if err := r.apply(stepCtx, w, env, &st, steps, progress, ready); err != nil {
		msg, visible := usererr.Message(err)
		if !visible || desired != phaseRunning || st == nil {
			// Internal errors (and any stop/delete error) are retried; the
			// sub-status says so, so nobody waits without knowing why.
			r.log.Error("reconcile step failed", "env", env.Id, "err", err)
			w.sub(&w.machine, subInProgress, "retrying after error: "+err.Error())
			_ = w.setStatus(ctx, r.status(env, st, transitional, ""))
			return false, err
		}
		// A start failed for a reason the user must fix: record it, put the
		// environment in a clear STOPPED state, keep everything on disk.
		r.log.Warn("environment failed to start", "env", env.Id, "reason", msg, "err", err)
		st.FailedSpecVersion, st.FailureMessage = version, msg
		if err := saveState(lay.state(), st); err != nil {
			return false, err
		}
		w.kickSoon()
		return false, nil
	}
	if last := steps[len(steps)-1]; desired == phaseRunning && (last == stepWaitAgent || last == stepDevcontainer) {
		// The agent just answered: the environment is running. Report it now
		// rather than after another observe pass; the periodic pass checks.
		w.setRunning(true)
		w.sub(&w.machine, subReady, "")
		return false, w.setStatus(ctx, r.status(env, st, phaseRunning, ""))
	}
	// Observe again: the next pass reports the final phase.
	w.kickSoon()
	return false, nil
}

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
		s.Image, s.ImageDigest = st.Image, st.ImageDigest
		if st.RepoName != "" {
			s.WorkspaceFolder = "/workspaces/" + st.RepoName
		}
		s.IpAddress = st.IP
		s.BuiltGeneration = st.BuiltGeneration
		if dc := st.DC; dc != nil {
			s.DevcontainerPath, s.Warnings, s.Extensions, s.CustomizationsJson = dc.ConfigPath, dc.Warnings, dc.Extensions, dc.Customizations
			if dc.WorkspaceFolder != "" {
				s.WorkspaceFolder = dc.WorkspaceFolder
			}
		}
	}
	if phase == phaseRunning {
		s.Ssh = &covev1.SSHAddress{Address: r.sshAddr, Host: env.GetMetadata().GetName() + ".cove"}
	}
	return s
}

// observe reads what exists on the host for environment id.
func (r *Runner) observe(ctx context.Context, id string, st *envState) (observed, error) {
	lay := r.layout(id)
	o := observed{stateExists: st != nil}
	if st != nil {
		o.contentReady = st.ContentReady
		o.imageReady = st.ImageDigest != "" && layersPresent(st.Layers)
	}
	o.rootfsMounted = isMountPoint(lay.rootfs())
	o.someMounted = o.rootfsMounted
	if st != nil && st.Compose != nil {
		for _, s := range st.Compose.Services {
			m := isMountPoint(lay.svc(s.Name).rootfs())
			o.rootfsMounted = o.rootfsMounted && m
			o.someMounted = o.someMounted || m
			o.imageReady = o.imageReady && layersPresent(s.Layers)
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
		if _, err := os.Lstat(lay.agentSocket()); err != nil {
			// Started by an older runner, whose agent listens inside the
			// environment: restart it with a socket only the runner reaches.
			o.container = runtime.StatusStopped
			return o, nil
		}
		o.agentReady = r.probeAgent(ctx, r.agentEndpoint(id)) == nil
		o.devcontainerDone = st == nil || st.DC == nil || st.DC.LifecyclePid == cs.Pid
	}
	return o, nil
}

func layersPresent(layers []string) bool {
	if len(layers) == 0 {
		return false
	}
	for _, l := range layers {
		if _, err := os.Stat(l); err != nil {
			return false
		}
	}
	return true
}

// isLocalSource reports whether url names a path on this host, by the one
// classification content.Clone and the server share (schemes compared
// case-insensitively); sources it refuses fail in content.Clone.
func isLocalSource(url string) bool {
	local, _ := content.ClassifySource(url)
	return local
}
