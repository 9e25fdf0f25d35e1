package runner

import (
	"context"
	"errors"
	"time"

	"github.com/covedev/cove/internal/errdefs"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// backupRunning takes the backup a running environment is due, if any,
// at the end of a pass that found it running and converged: manual when
// spec.backup_generation asks for one, else periodic every
// BackupConfig.Interval from the last attempt (the first interval runs
// from the first pass that finds it running). Its containers are frozen
// for the walk. A newer spec (a stop) cancels it. Never an error for the
// environment: a failure shows in backup_progress and the log.
func (r *Runner) backupRunning(ctx context.Context, w *worker, env *covev1.Environment, st *envState) {
	if st == nil || !st.Content.Ready {
		return
	}
	lay := withDiskLayout(r.layout(env.Id), st)
	gen := env.GetSpec().GetBackupGeneration()
	manual := gen > st.Backup.Generation
	now := r.clock.Now()
	interval := r.bk.cfg.Interval
	if interval > 0 && st.Backup.Attempt.IsZero() {
		st.Backup.Attempt = now
		if err := saveState(lay.State(), st); err != nil {
			r.log.Warn("save state", "env", env.Id, "err", err)
		}
	}
	periodic := interval > 0 && !now.Before(st.Backup.Attempt.Add(interval))
	if !manual && !periodic {
		w.setBackupAt(st.Backup.Attempt, interval)
		return
	}
	trigger := "periodic"
	if manual {
		trigger = "manual"
	}
	stepCtx, cancel := context.WithCancel(ctx)
	w.setStepCancel(env.GetSpec().GetSpecVersion(), cancel)
	defer w.setStepCancel(0, nil)
	defer cancel()
	e := &stepEnv{env: env, lay: lay, st: st}
	report := func() { w.progress(ctx, r.status(env, st, phaseRunning, "")) }
	_, err := r.takeBackup(stepCtx, e, trigger, true, report)
	if stepCtx.Err() != nil && ctx.Err() == nil {
		// A newer spec: the next pass acts on it (a stop backs up then).
		st.Backup.progress = nil
		return
	}
	st.Backup.Attempt = now
	switch {
	case errors.Is(err, errBackupsDisabled):
	case err != nil:
		r.log.Error("backup failed", "env", env.Id, "trigger", trigger, "err", err, "category", errdefs.CategoryOf(err))
	}
	if manual {
		// Carried out, done or failed (backup_progress says which).
		st.Backup.Generation = gen
	}
	if err := saveState(lay.State(), st); err != nil {
		r.log.Warn("save state", "env", env.Id, "err", err)
	}
	w.setBackupAt(st.Backup.Attempt, interval)
	_ = w.setStatus(ctx, r.status(env, st, phaseRunning, ""))
}

// setBackupAt notes when the next periodic backup is due (zero: none), so
// that a quiet environment's periodic pass still comes for it.
func (w *worker) setBackupAt(last time.Time, interval time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if interval <= 0 {
		w.backupAt = time.Time{}
		return
	}
	w.backupAt = last.Add(interval)
}

// backupDue reports whether a periodic backup is due at now (guarded by
// w.mu, held by the caller).
func (w *worker) backupDueLocked(now time.Time) bool {
	return !w.backupAt.IsZero() && !now.Before(w.backupAt)
}
