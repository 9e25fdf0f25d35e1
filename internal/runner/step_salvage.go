package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Salvage on release (docs/backups.md, "When an environment leaves a
// runner"). An environment that left this runner (moved or rescheduled
// while the runner was away) comes back as a copy to delete, with
// spec.salvage set when it lives on elsewhere. The copy may hold work
// newer than the backup the environment was moved from (the runner lost
// its network, not its disk), so before the remove step the salvage step
// takes one last backup of it, trigger "salvage", unless nothing changed
// since its last recorded backup, and has the server record it. Only then
// does the plan go on to delete the copy. A backup that fails (storage or
// server down) keeps the copy, stopped, and is tried again with backoff,
// for as long as it takes: unsaved work is never deleted on a timer
// (past BackupConfig.SalvageWarnAfter every failure is logged as an
// error that asks for the operator). A deleted environment's copy has no
// salvage flag: the user deleted it, it is just deleted.

// triggerSalvage is a salvage backup's trigger (server: salvage.go).
const triggerSalvage = "salvage"

// salvageState is the salvage step's part of the backup section: its
// failures, for the backoff and the operator.
type salvageState struct {
	FailingSince time.Time `json:"failingSince,omitzero"`
	Failures     int       `json:"failures,omitempty"`
	NextAttempt  time.Time `json:"nextAttempt,omitzero"`
	LastError    string    `json:"lastError,omitempty"`
}

// salvageBackoff is the wait after the n-th failure in a row (n >= 1):
// 30 s doubling, at most salvageBackoffMax.
func salvageBackoff(n int) time.Duration {
	d := 30 * time.Second
	for i := 1; i < n && d < salvageBackoffMax; i++ {
		d *= 2
	}
	return min(d, salvageBackoffMax)
}

const salvageBackoffMax = time.Hour

// defaultSalvageWarnAfter is BackupConfig.SalvageWarnAfter's default.
const defaultSalvageWarnAfter = 7 * 24 * time.Hour

// needsSalvage: the copy's content may hold work in no recorded backup —
// it ran (or was left running) since its last backup, or that backup was
// never recorded by the server.
func needsSalvage(st *envState, live bool) bool {
	if st == nil || !st.Content.Ready {
		return false
	}
	return live || st.Backup.Dirty || (len(st.Backup.Last) > 0 && !st.Backup.Reported)
}

// reclaimSalvage: a salvage backup taken here but never recorded, of an
// environment assigned to this runner again (moved back before its copy
// was deleted), is reported as the backup of the copy as it stopped: the
// environment's own runner cannot report a salvage, and the restore the
// move asks for must not take "nothing changed since" an unrecorded
// backup for saved.
func reclaimSalvage(env *covev1.Environment, st *envState) {
	if env.GetSpec().GetDesiredPhase() != phaseDeleted {
		st.Backup.Salvage = salvageState{} // a failing salvage is over
	}
	b := st.Backup.last()
	if b.GetTrigger() != triggerSalvage || st.Backup.Reported || env.GetSpec().GetDesiredPhase() == phaseDeleted {
		return
	}
	b.Trigger = "stop"
	st.Backup.Last, _ = protojson.Marshal(b)
}

// retryAtError asks the worker to try again no sooner than at.
type retryAtError struct {
	err error
	at  time.Time
}

func (e *retryAtError) Error() string { return e.err.Error() }
func (e *retryAtError) Unwrap() error { return e.err }

// salvageStep backs a released copy up before it is deleted. It owns the
// state's backup section while it runs.
type salvageStep struct{ r *Runner }

func (s salvageStep) run(ctx context.Context, e *stepEnv) error {
	st, r := e.st, s.r
	if st == nil || len(backupSources(e.lay, st)) == 0 {
		return nil // nothing on disk to save
	}
	sv := &st.Backup.Salvage
	if now := r.clock.Now(); now.Before(sv.NextAttempt) {
		return &retryAtError{err: usererr.New("salvage backup failed (%s); the copy is kept, stopped, and tried again at %s",
			sv.LastError, sv.NextAttempt.UTC().Format(time.RFC3339)), at: sv.NextAttempt}
	}
	why, err := s.salvage(ctx, e)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return s.failed(e, err)
	}
	r.log.Info("released copy: "+why+"; deleting it", "env", e.id())
	*sv = salvageState{}
	st.Backup.Dirty = false
	return nil
}

// salvage takes and reports the salvage backup; why says what happened
// (the copy may go), an error that it may not.
func (s salvageStep) salvage(ctx context.Context, e *stepEnv) (why string, err error) {
	st, r := e.st, s.r
	b, err := r.takeBackup(ctx, e, triggerSalvage, false, reportFunc(e.rep))
	switch {
	case errors.Is(err, errBackupsDisabled):
		r.log.Error("released copy: backups are disabled on the server now; its content cannot be saved and is deleted", "env", e.id())
		return "backups are disabled on the server", nil
	case err != nil && notOurs(err):
		// The server takes no salvage of it: the environment was deleted
		// meanwhile, or this runner's salvage is recorded already.
		r.log.Warn("released copy: the server takes no salvage of it (the environment was deleted, or its salvage is recorded)", "env", e.id(), "err", err)
		return "the server takes no salvage of it", nil
	case err != nil:
		return "", err
	}
	last := st.Backup.last()
	if b == nil {
		// Nothing changed since the last backup.
		if last == nil || st.Backup.Reported {
			return "nothing changed since its last recorded backup " + last.GetId(), nil
		}
		// That one never reached the server's records: it is the salvage.
		last.Trigger = triggerSalvage
		st.Backup.Last, _ = protojson.Marshal(last)
	}
	return s.report(ctx, e)
}

// report has the server record the state's last backup as the salvage.
func (s salvageStep) report(ctx context.Context, e *stepEnv) (string, error) {
	st, r := e.st, s.r
	b := st.Backup.last()
	if r.client == nil {
		return "", errors.New("not connected to a server")
	}
	_, err := r.client.api.ReportBackup(ctx, connect.NewRequest(&covev1.ReportBackupRequest{Backup: b}))
	switch c := connect.CodeOf(err); {
	case err == nil:
		st.Backup.Reported = true
		r.log.Warn("released copy held work newer than the backup its environment was moved from: salvaged", "env", e.id(), "backup", b.GetId(), "files", b.GetFiles())
		return "salvaged as backup " + b.GetId(), nil
	case c == connect.CodeAlreadyExists || notOurs(err):
		st.Backup.Reported = true
		r.log.Warn("released copy: the server takes no salvage of it (the environment was deleted, or its salvage is recorded)", "env", e.id(), "backup", b.GetId(), "err", err)
		return "the server takes no salvage of it", nil
	case c == connect.CodeFailedPrecondition:
		// Its manifest is not in storage (swept meanwhile): the next
		// attempt takes a new backup, in full.
		st.Backup.Last, st.Backup.Reported, st.Backup.Dirty = nil, false, true
		return "", fmt.Errorf("the server did not record the salvage backup: %w", err)
	case c == connect.CodeUnavailable || c == connect.CodeDeadlineExceeded || c == connect.CodeAborted || c == connect.CodeResourceExhausted:
		return "", errdefs.Unavailable(fmt.Errorf("report the salvage backup: %w", err))
	default:
		return "", fmt.Errorf("report the salvage backup: %w", err)
	}
}

// failed records a failed attempt and the next one's time; the copy stays.
func (s salvageStep) failed(e *stepEnv, err error) error {
	r, sv := s.r, &e.st.Backup.Salvage
	now := r.clock.Now()
	if sv.FailingSince.IsZero() {
		sv.FailingSince = now
	}
	sv.Failures++
	sv.NextAttempt = now.Add(salvageBackoff(sv.Failures))
	msg, _ := usererr.Message(err)
	if msg == "" {
		msg = err.Error()
	}
	sv.LastError = truncateUTF8(msg, 1024)
	e.st.Backup.setProgress(&covev1.BackupProgress{Operation: "backup", StartedAt: timestamppb.New(now),
		State: &covev1.SubStatus{Phase: subFailed, Message: "salvage backup failed: " + sv.LastError}})
	args := []any{"env", e.id(), "err", err, "failingSince", sv.FailingSince.UTC().Format(time.RFC3339), "failures", sv.Failures, "next", sv.NextAttempt.UTC().Format(time.RFC3339)}
	if warnAfter := r.bk.cfg.SalvageWarnAfter; now.Sub(sv.FailingSince) >= warnAfter {
		r.log.Error(fmt.Sprintf("released copy NOT deleted: its salvage backup has failed for more than %s; it may hold the only copy of recent work. Fix the backup storage (the runner keeps trying), or remove %s by hand once you are sure it is not needed", warnAfter, e.lay.Dir), args...)
	} else {
		r.log.Warn("released copy kept: its salvage backup failed; tried again later (the copy is deleted only once its content is saved)", args...)
	}
	return &retryAtError{err: usererr.Wrap(err, "salvage backup failed (%s); the copy is kept, stopped, and tried again at %s", sv.LastError, sv.NextAttempt.UTC().Format(time.RFC3339)), at: sv.NextAttempt}
}

// truncateUTF8 cuts s to at most n bytes on a rune boundary.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
