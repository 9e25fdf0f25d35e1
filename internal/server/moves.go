package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// Moves: an environment runs on another runner than the one holding its
// content by being stopped there (a backup is taken on stop), then started
// on the new runner from that backup (spec.restore). When the runner
// holding it is gone (INACTIVE), the move starts from the latest backup at
// once, and says what may be lost. The server's loop (reconcileMoves)
// carries out pending moves, reschedules environments whose runner has
// been INACTIVE for longer than Config.RescheduleAfter, and completes the
// deletion of environments on such runners.

const (
	phaseStarting = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STARTING
	runnerActive  = covev1.RunnerPhase_RUNNER_PHASE_ACTIVE
)

// moveOnUpdate handles UpdateEnvironment's runner: with one that is not the
// environment's, it starts a move and returns the environment (done);
// otherwise the caller goes on with a plain start or stop. A plain update
// ends a pending move. The caller holds quotaMu.
func (s *Server) moveOnUpdate(ctx context.Context, u store.User, env *covev1.Environment, runner string, want covev1.EnvironmentPhase) (*covev1.Environment, bool, error) {
	if runner == "" {
		return nil, false, s.store.DeleteMove(ctx, env.Id)
	}
	if want != phaseRunning {
		return nil, false, invalidField("runnerId", "goes with desiredPhase RUNNING (a move starts the environment there)")
	}
	if err := notDeleted(env); err != nil {
		return nil, false, err
	}
	to, err := s.findRunner(ctx, runner)
	if err != nil {
		return nil, false, err
	}
	if to.ID == env.GetMetadata().GetRunnerId() {
		return nil, false, s.store.DeleteMove(ctx, env.Id)
	}
	if !s.backupsEnabled() {
		return nil, false, connect.NewError(connect.CodeFailedPrecondition, errors.New("moving an environment to another runner needs backups, which are disabled on this server (--backups=false)"))
	}
	if err := s.canTake(ctx, to, env); err != nil {
		return nil, false, err
	}
	from, fromErr := s.store.GetRunner(ctx, env.GetMetadata().GetRunnerId())
	if fromErr != nil && !errors.Is(fromErr, store.ErrNotFound) {
		return nil, false, fromErr
	}
	if env.GetMetadata().GetRunnerId() == "" || fromErr != nil || from.Phase != runnerActive {
		// Nobody holds newer content than the latest backup: move now.
		moved, err := s.moveNow(ctx, env.Id, to, from, env.GetMetadata().GetRunnerId())
		if err != nil {
			return nil, false, err
		}
		s.log.Info("environment moved", "env", env.Id, "from", from.ID, "to", to.ID, "by", u.Name)
		return moved, true, s.store.DeleteMove(ctx, env.Id)
	}
	// Stop it where it is, with a backup taken after this request.
	var m store.Move
	moved, err := s.store.UpdateEnvironment(ctx, env.Id, func(e *covev1.Environment) error {
		if err := notDeleted(e); err != nil {
			return err
		}
		if e.GetMetadata().GetRunnerId() != from.ID {
			return errMovedMeanwhile
		}
		e.Spec.DesiredPhase = phaseStopped
		e.Spec.StopReason = fmt.Sprintf("moving to runner %q: stopping and backing up on %q first", to.Name, from.Name)
		e.Spec.BackupGeneration++
		e.Spec.SpecVersion++
		m = store.Move{EnvironmentID: e.Id, FromRunnerID: from.ID, ToRunnerID: to.ID, RequestedBy: u.ID, RequestedAt: s.now(),
			SpecVersion: e.Spec.SpecVersion, BackupGeneration: e.Spec.BackupGeneration}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if err := s.store.PutMove(ctx, m); err != nil {
		return nil, false, err
	}
	s.log.Info("environment move requested", "env", env.Id, "from", from.ID, "to", to.ID, "by", u.Name)
	return moved, true, nil
}

// canTake refuses a target runner that is not connected, does not offer
// the environment's class, or is full.
func (s *Server) canTake(ctx context.Context, to store.Runner, env *covev1.Environment) error {
	class := env.GetSpec().GetClassId()
	switch {
	case to.Phase != runnerActive:
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("runner %q is not connected (last seen %s): pick an active runner (`cove runner list`)", to.Name, lastSeen(to)))
	case !offersClass(to, class):
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("runner %q does not offer class %q", to.Name, class))
	}
	load, err := s.runnerLoad(ctx)
	if err != nil {
		return err
	}
	if m := to.Capabilities.GetMaxEnvironments(); m > 0 && load[to.ID] >= int(m) {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("runner %q is full (%d environments)", to.Name, m))
	}
	return nil
}

func lastSeen(r store.Runner) string {
	if r.LastSeen.IsZero() {
		return "never"
	}
	return r.LastSeen.UTC().Format(time.RFC3339)
}

// movedWarningPrefix starts the warning of a move from a lost runner,
// which the server keeps in the status across the runner's reports.
const movedWarningPrefix = "moved from runner "

// errMovedMeanwhile: another request or controller pass moved the
// environment first.
var errMovedMeanwhile = connect.NewError(connect.CodeAborted, errors.New("the environment changed runner meanwhile: look again, and retry if needed"))

// moveNow assigns the environment to runner to, started from its latest
// backup (or created afresh if it never ran and has none). from is the
// runner that held it (zero if none, or removed); when it is not the
// runner that took the backup's content last, what may be lost is said in
// the status's warnings. It does nothing (errMovedMeanwhile) unless the
// environment is still on runner onRunner.
func (s *Server) moveNow(ctx context.Context, id string, to, from store.Runner, onRunner string) (*covev1.Environment, error) {
	bs, err := s.store.ListBackups(ctx, id)
	if err != nil {
		return nil, err
	}
	if bs, err = s.restoreSources(ctx, id, bs); err != nil { // restoresource.go
		return nil, err
	}
	// A target that still holds a copy (a release not carried out yet: its
	// salvage may be failing) backs that copy up before the restore
	// replaces it (salvage.go).
	held := true
	if _, err := s.store.GetRelease(ctx, id, to.ID); errors.Is(err, store.ErrNotFound) {
		held = false
	} else if err != nil {
		return nil, err
	}
	var ran bool
	moved, err := s.moveNowUpdate(ctx, id, to, from, onRunner, bs, held, &ran)
	if err != nil {
		return nil, err
	}
	// The old runner deletes its copy; the new one holds none to delete
	// (releases.go).
	if err := s.store.DeleteRelease(ctx, id, to.ID); err != nil {
		return nil, err
	}
	return moved, s.recordRelease(ctx, id, onRunner, ran)
}

// moveNowUpdate assigns the environment to runner to; ran says whether it
// ran on the runner it leaves (started there since it was assigned: its
// copy may hold changes, review REV-S8-3).
func (s *Server) moveNowUpdate(ctx context.Context, id string, to, from store.Runner, onRunner string, bs []store.Backup, held bool, ran *bool) (*covev1.Environment, error) {
	return s.store.UpdateEnvironment(ctx, id, func(e *covev1.Environment) error {
		if err := notDeleted(e); err != nil {
			return err
		}
		if e.GetMetadata().GetRunnerId() != onRunner {
			return errMovedMeanwhile
		}
		name := e.GetMetadata().GetName()
		var warning string
		var restore *covev1.RestoreRequest
		switch {
		case len(bs) > 0:
			b := bs[0]
			restore = &covev1.RestoreRequest{BackupId: b.ID, Generation: restoreGeneration(e) + 1, BackupFirst: held}
			if from.ID != "" && from.Phase != runnerActive {
				warning = fmt.Sprintf(movedWarningPrefix+"%q (not connected since %s) to %q, from its last backup (%s): changes made on %q after %s are not in it; "+
					"if that runner returns, they are backed up there as a \"salvage\" backup you can restore by name (see `cove env backups %s`)",
					from.Name, lastSeen(from), to.Name, b.ID, from.Name, b.Time.UTC().Format(time.RFC3339), e.GetMetadata().GetName())
			}
		case e.GetMetadata().GetStartedAt() == nil && e.GetStatus().GetLastBackup().GetFiles() == 0, heldNothing(e, from):
			// It never ran, or its runner holds no content for it (a
			// clone that failed there), and no backup holds any: nothing
			// to lose, it is created afresh (REV-14).
		default:
			where := "no runner"
			if from.ID != "" {
				where = fmt.Sprintf("runner %q (last seen %s)", from.Name, lastSeen(from))
			}
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
				"environment %q has no backup to start from elsewhere: its content is only on %s; wait for that runner to return, or delete the environment", name, where))
		}
		prev := e.GetStatus()
		*ran = e.GetMetadata().GetStartedAt() != nil
		e.Metadata.RunnerId = to.ID
		e.Metadata.StartedAt = nil
		e.Metadata.RunStartedAt = nil
		e.Spec.Restore = restore
		e.Spec.DesiredPhase = phaseRunning
		e.Spec.StopReason = ""
		e.Spec.SpecVersion++
		phase := phaseCreating
		if restore != nil {
			phase = phaseStarting
		}
		e.Status = &covev1.EnvironmentStatus{
			Phase:                     phase,
			StatusVersion:             prev.GetStatusVersion() + 1,
			ObservedSpecVersion:       prev.GetObservedSpecVersion(),
			Content:                   &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_PENDING},
			Machine:                   &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_PENDING},
			LastBackup:                prev.GetLastBackup(),
			ObservedBackupGeneration:  e.Spec.GetBackupGeneration(),
			ObservedRestoreGeneration: prev.GetObservedRestoreGeneration(),
		}
		// A salvage not yet acted on is still news (salvage.go).
		e.Status.Warnings = salvagedWarnings(prev)
		if warning != "" {
			e.Status.Warnings = append(e.Status.Warnings, warning)
			s.log.Warn("environment moved from a lost runner", "env", e.Id, "from", from.ID, "to", to.ID, "backup", restore.GetBackupId())
		}
		return nil
	})
}

// reconcileMoves carries out pending moves, then reschedules environments
// of runners INACTIVE for longer than RescheduleAfter and completes the
// deletions they were asked for.
func (s *Server) reconcileMoves(ctx context.Context) error {
	moves, err := s.store.ListMoves(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range moves {
		if err := s.advanceMove(ctx, m); err != nil {
			errs = append(errs, fmt.Errorf("move %s: %w", m.EnvironmentID, err))
		}
	}
	if s.cfg.RescheduleAfter > 0 {
		if err := s.rescheduleLost(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// advanceMove finishes a move once the old runner has stopped the
// environment and backed it up, or at once if that runner is gone; it
// cancels it when it cannot happen (the backup failed, the target left).
func (s *Server) advanceMove(ctx context.Context, m store.Move) error {
	env, err := s.store.GetEnvironment(ctx, m.EnvironmentID)
	if errors.Is(err, store.ErrNotFound) {
		return s.store.DeleteMove(ctx, m.EnvironmentID)
	}
	if err != nil {
		return err
	}
	if notDeleted(env) != nil || env.GetMetadata().GetRunnerId() != m.FromRunnerID || env.GetSpec().GetDesiredPhase() != phaseStopped {
		return s.store.DeleteMove(ctx, m.EnvironmentID) // overtaken by another request
	}
	from, err := s.store.GetRunner(ctx, m.FromRunnerID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	fromGone := err != nil || from.Phase != runnerActive
	st := env.GetStatus()
	done := st.GetPhase() == phaseStopped && st.GetObservedSpecVersion() >= m.SpecVersion && st.GetObservedBackupGeneration() >= m.BackupGeneration
	// The backup's outcome decides, not the generation alone: a runner
	// marks the generation observed when its stop backup failed too, and
	// moving then would start the environment elsewhere from an older
	// backup, losing the work since (REV-12). Once the runner has handled
	// the request, its last backup operation is the move's; before, one
	// that failed after the request (by the runner's clock) is.
	p := st.GetBackupProgress()
	if p.GetOperation() == "backup" && p.GetState().GetPhase() == covev1.SubPhase_SUB_PHASE_FAILED &&
		(done || !p.GetStartedAt().AsTime().Before(m.RequestedAt)) {
		return s.cancelMove(ctx, m, fmt.Sprintf("the move to another runner was cancelled: the backup on runner %q failed (%s); the environment stays there, stopped, with its content: start it there, or try the move again",
			cmpOr(from.Name, m.FromRunnerID), p.GetState().GetMessage()))
	}
	if !done && !fromGone {
		return nil // wait for the runner
	}
	if !fromGone {
		ok, err := s.backedUpForMove(ctx, m, p)
		if err != nil || !ok {
			return err // wait for the runner's report of the backup
		}
	}
	to, err := s.store.GetRunner(ctx, m.ToRunnerID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err != nil || s.canTake(ctx, to, env) != nil {
		return s.cancelMove(ctx, m, fmt.Sprintf("the move was cancelled: runner %q cannot take the environment any more (removed, not connected or full)", cmpOr(to.Name, m.ToRunnerID)))
	}
	if fromGone && err == nil {
		from.Phase = covev1.RunnerPhase_RUNNER_PHASE_INACTIVE
	}
	if _, err := s.moveNow(ctx, env.Id, to, from, m.FromRunnerID); err != nil {
		if errors.Is(err, errMovedMeanwhile) {
			return s.store.DeleteMove(ctx, m.EnvironmentID)
		}
		var ce *connect.Error
		if errors.As(err, &ce) {
			return s.cancelMove(ctx, m, "the move was cancelled: "+ce.Message())
		}
		return err
	}
	s.log.Info("environment moved", "env", env.Id, "from", m.FromRunnerID, "to", to.ID)
	return s.store.DeleteMove(ctx, m.EnvironmentID)
}

// NothingChangedPrefix starts the message of a READY backup_progress with
// which a runner says it took no backup because nothing changed since the
// backup the message then names (internal/runner's backup step).
const NothingChangedPrefix = "skipped: nothing changed since "

// backedUpForMove reports whether the environment's content as the old
// runner stopped it is in a recorded backup: one recorded (by the
// server's clock) after the move was requested, or the one a move starts
// from (restoreSource: the newest, or the one restored since) when the
// runner says nothing changed since that one. A runner that says it holds
// no content has nothing to lose: the move goes ahead, from the latest
// backup that holds files, or afresh (REV-14). It is called once the
// runner handled the move's backup request.
func (s *Server) backedUpForMove(ctx context.Context, m store.Move, p *covev1.BackupProgress) (bool, error) {
	ready := p.GetOperation() == "backup" && p.GetState().GetPhase() == covev1.SubPhase_SUB_PHASE_READY
	if ready && p.GetState().GetMessage() == NothingHeldMessage {
		return true, nil
	}
	bs, err := s.store.ListBackups(ctx, m.EnvironmentID)
	// A salvage (another runner's old copy, salvage.go) is not the move's.
	if bs = regularBackups(bs); err != nil || len(bs) == 0 {
		return false, err
	}
	if !bs[0].ReceivedAt.Before(m.RequestedAt) {
		return true, nil
	}
	env, err := s.store.GetEnvironment(ctx, m.EnvironmentID)
	if err != nil {
		return false, err
	}
	src, ok := restoreSource(env, bs)
	return ready && ok && p.GetState().GetMessage() == NothingChangedPrefix+src.ID, nil
}

// cancelMove ends a pending move and says why in spec.stopReason (the
// environment stays stopped where it is).
func (s *Server) cancelMove(ctx context.Context, m store.Move, why string) error {
	errSaid := errors.New("said already")
	if _, err := s.store.UpdateEnvironment(ctx, m.EnvironmentID, func(e *covev1.Environment) error {
		if e.GetSpec().GetStopReason() == why {
			return errSaid // another pass cancelled it
		}
		e.Spec.StopReason = why
		e.Spec.SpecVersion++
		return nil
	}); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, errSaid) {
		return err
	}
	s.log.Warn("environment move cancelled", "env", m.EnvironmentID, "to", m.ToRunnerID, "why", why)
	return s.store.DeleteMove(ctx, m.EnvironmentID)
}
