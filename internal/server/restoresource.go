package server

import (
	"context"
	"time"

	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// NothingHeldMessage is the message of a READY backup_progress with which
// a runner says it took no backup because it holds no content for the
// environment (internal/runner's backup step: a clone or a restore that
// failed there). It is not "the content is in backup X": a move goes
// ahead as from a runner that holds nothing (REV-14).
const NothingHeldMessage = "nothing to back up: this runner holds no content for it"

// restoreSource is the backup an environment starts from when nobody
// names one (moves, reschedules, `cove env restore` without --backup):
// status.last_backup when it names one of its records — the server sets
// it to the newest record when a backup is reported and to the restored
// one when a restore completes, so a rollback stays rolled back (REV-15)
// — else the newest record. A backup that holds no files is never picked
// (REV-14: taken where there was no content, it would be restored as
// ready content); a user may still name one. ok is false when there is
// none to pick; bs is newest first.
func restoreSource(env *covev1.Environment, bs []store.Backup) (b store.Backup, ok bool) {
	if id := env.GetStatus().GetLastBackup().GetId(); id != "" {
		for _, b := range bs {
			if b.ID == id && b.Files > 0 {
				return b, true
			}
		}
	}
	for _, b := range bs {
		// A salvage (salvage.go) only when the user restored it since
		// (status.last_backup, above).
		if b.Files > 0 && b.Trigger != triggerSalvage {
			return b, true
		}
	}
	return store.Backup{}, false
}

// restoreSources is bs cut to the one restoreSource picks (none if none).
func (s *Server) restoreSources(ctx context.Context, id string, bs []store.Backup) ([]store.Backup, error) {
	if len(bs) == 0 {
		return nil, nil
	}
	env, err := s.store.GetEnvironment(ctx, id)
	if err != nil {
		return nil, err
	}
	if b, ok := restoreSource(env, bs); ok {
		return []store.Backup{b}, nil
	}
	return nil, nil
}

// heldNothing: the environment's runner, connected, answered the
// backup asked of it that it holds no content for it.
func heldNothing(e *covev1.Environment, from store.Runner) bool {
	p := e.GetStatus().GetBackupProgress()
	return from.ID != "" && from.Phase == runnerActive && p.GetOperation() == "backup" &&
		p.GetState().GetPhase() == covev1.SubPhase_SUB_PHASE_READY && p.GetState().GetMessage() == NothingHeldMessage
}

// restoredNow is the backup a status reports newly restored: spec.restore
// carried out with a READY restore progress, not already so in prev (""
// if none).
func restoredNow(env *covev1.Environment, prev, st *covev1.EnvironmentStatus) string {
	r := env.GetSpec().GetRestore()
	done := func(s *covev1.EnvironmentStatus) bool {
		p := s.GetBackupProgress()
		return r.GetBackupId() != "" && s.GetObservedRestoreGeneration() >= r.GetGeneration() &&
			p.GetOperation() == "restore" && p.GetState().GetPhase() == covev1.SubPhase_SUB_PHASE_READY
	}
	if !done(st) || (done(prev) && prev.GetObservedRestoreGeneration() == st.GetObservedRestoreGeneration()) {
		return ""
	}
	return r.GetBackupId()
}

// setRestoredBackup makes backup id, which a restore reported at time at
// brought back, the environment's status.last_backup — what moves,
// reschedules and `cove env restore` start from (REV-15) — unless a
// backup was recorded after that report (the newer content).
func (s *Server) setRestoredBackup(ctx context.Context, envID, id string, at time.Time) error {
	all, err := s.store.ListBackups(ctx, envID)
	if err != nil {
		return err
	}
	// A salvage recorded meanwhile is not newer content of this run.
	if reg := regularBackups(all); len(reg) > 0 && reg[0].ReceivedAt.After(at) {
		return nil
	}
	for _, b := range all {
		if b.ID != id {
			continue
		}
		rec := backupProto(b)
		_, err := s.store.UpdateEnvironment(ctx, envID, func(e *covev1.Environment) error {
			if e.GetSpec().GetRestore().GetBackupId() != id {
				return nil // another restore asked meanwhile
			}
			if e.Status == nil {
				e.Status = &covev1.EnvironmentStatus{}
			}
			e.Status.LastBackup = rec
			return nil
		})
		if err == nil {
			s.log.Info("restored backup is the environment's latest", "env", envID, "backup", id)
		}
		return err
	}
	return nil
}
