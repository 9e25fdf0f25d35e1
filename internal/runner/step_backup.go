package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/backupfs"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// backupState is the backup and restore steps' section of the state.
type backupState struct {
	// Last is the last backup taken (covev1.Backup as protojson): the
	// previous of the next one, reported again until the server has it.
	Last     json.RawMessage `json:"last,omitempty"`
	Reported bool            `json:"reported,omitempty"`
	// Dirty: the content may have changed since Last (the start step
	// sets it; a backup of the stopped environment clears it).
	Dirty bool `json:"dirty,omitempty"`
	// StopFailed is the spec version at which the stop's backup failed:
	// the stop goes on, and that stop does not try again.
	StopFailed int64 `json:"stopFailed,omitempty"`
	// Generation and RestoreGeneration are the spec's backup and restore
	// generations carried out.
	Generation        int64 `json:"generation,omitempty"`
	RestoreGeneration int64 `json:"restoreGeneration,omitempty"`
	// LostDisk: a restore of the latest backup began on a runner that
	// had no state for the environment (its disk lost): tried again until
	// it succeeds, where a failed clone is cloned again.
	LostDisk bool `json:"lostDisk,omitempty"`
	// Attempt is when the last backup of the running environment was
	// tried (the periodic interval runs from it).
	Attempt time.Time `json:"attempt,omitzero"`
	// Progress is the last operation's outcome (READY, FAILED with its
	// message); progress is the one under way (not saved).
	Progress json.RawMessage `json:"progress,omitempty"`
	progress *covev1.BackupProgress
	// Salvage: the salvage step's failures (step_salvage.go).
	Salvage salvageState `json:"salvage,omitzero"`
}

func (b *backupState) last() *covev1.Backup {
	if len(b.Last) == 0 {
		return nil
	}
	var m covev1.Backup
	if protojson.Unmarshal(b.Last, &m) != nil {
		return nil
	}
	return &m
}

// setProgress records p (saved when it is final).
func (b *backupState) setProgress(p *covev1.BackupProgress) {
	validUTF8(p.ProtoReflect()) // it may name files
	b.progress = p
	if p.GetState().GetPhase() != subInProgress {
		b.Progress, _ = protojson.Marshal(p)
	}
}

// backupStatus adds the backup fields to a status.
func backupStatus(s *covev1.EnvironmentStatus, st *envState) {
	if st == nil {
		return
	}
	b := &st.Backup
	s.LastBackup = b.last()
	s.ObservedBackupGeneration, s.ObservedRestoreGeneration = b.Generation, b.RestoreGeneration
	if b.progress != nil {
		s.BackupProgress = b.progress
	} else if len(b.Progress) > 0 {
		var p covev1.BackupProgress
		if protojson.Unmarshal(b.Progress, &p) == nil {
			s.BackupProgress = &p
		}
	}
}

// backupName is a new backup's name, unique in the organization: the
// environment's id, the UTC time and 8 random bytes:
// "<env id>/20261203T211900Z-<16 hex digits>".
func backupName(id string, t time.Time) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return id + "/" + t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// backupSources are the environment's trees: workspace, the dev
// container's upper directory, volumes, each Compose service's upper
// directory; those that do not exist (never mounted) are left out.
func backupSources(lay envdir.Layout, st *envState) []backupfs.Source {
	srcs := []backupfs.Source{
		{Name: "workspace", Dir: lay.Workspace()},
		{Name: "upper", Dir: lay.Upper(), Overlay: true},
		{Name: "volumes", Dir: lay.Volumes()},
	}
	if st.Image.Compose != nil {
		var names []string
		for _, s := range st.Image.Compose.Services {
			names = append(names, s.Name)
		}
		sort.Strings(names)
		for _, n := range names {
			srcs = append(srcs, backupfs.Source{Name: "svc/" + n + "/upper", Dir: lay.Service(n).Upper(), Overlay: true})
		}
	}
	out := srcs[:0]
	for _, s := range srcs {
		if fi, err := os.Lstat(s.Dir); err == nil && fi.IsDir() {
			out = append(out, s)
		}
	}
	return out
}

func idMapOf(st *envState) backupfs.IDMap {
	return backupfs.IDMap{HostUID: st.IDMap.HostID, HostGID: st.IDMap.HostID, Size: st.IDMap.Size}
}

// takeBackup backs up the environment (live: its containers run and are
// frozen for the walk). It returns the backup, nil when nothing changed
// since the last one (no backup written), or errBackupsDisabled.
func (r *Runner) takeBackup(ctx context.Context, e *stepEnv, trigger string, live bool, report func()) (*covev1.Backup, error) {
	st := e.st
	began := r.clock.Now()
	storage, key, err := r.backupAccess(ctx, e.id())
	if errors.Is(err, errBackupsDisabled) {
		return nil, err
	}
	if err != nil {
		st.Backup.setProgress(&covev1.BackupProgress{Operation: "backup", StartedAt: timestamppb.New(began),
			State: &covev1.SubStatus{Phase: subFailed, Message: "backup failed: " + err.Error()}})
		return nil, err
	}
	defer clear(key)
	prev := st.Backup.last()
	prog := &covev1.BackupProgress{Operation: "backup", State: &covev1.SubStatus{Phase: subInProgress, Message: trigger}, StartedAt: timestamppb.New(began)}
	st.Backup.setProgress(prog)
	report()
	freeze := ""
	if live && r.cfg.CgroupParent != "" {
		freeze = resources.CgroupPath(r.cfg.CgroupParent, e.id())
	}
	var (
		name string
		job  *backupJob
		run  childRun
	)
	for attempt := 1; ; attempt++ {
		// A new name for every attempt: one refused because garbage
		// collection swept meanwhile is taken again at once.
		name = backupName(e.id(), r.clock.Now())
		job = &backupJob{Op: "backup", Storage: storage, Key: key, Name: name, Trigger: trigger, Previous: prev.GetId(),
			Time: r.clock.Now().UTC(), Sources: backupSources(e.lay, st), Map: idMapOf(st)}
		run, err = r.runChild(ctx, job, freeze, func(p backupfs.Progress) {
			st.Backup.progress = &covev1.BackupProgress{Operation: "backup", State: prog.State, FilesDone: p.Files, BytesDone: p.Bytes, StartedAt: prog.StartedAt}
			report()
		})
		if err != nil || !run.final.Swept || attempt == 3 {
			break
		}
		r.log.Info("backup refused as garbage collection swept the storage meanwhile; taking it again", "env", e.id(), "backup", name)
	}
	if err == nil && run.final.Error != "" {
		err = childError(run.final)
	}
	if err == nil && run.final.Walked == nil {
		err = errors.New("the backup process gave no result")
	}
	if err != nil {
		st.Backup.setProgress(&covev1.BackupProgress{Operation: "backup", StartedAt: prog.StartedAt,
			State: &covev1.SubStatus{Phase: subFailed, Message: "backup failed: " + err.Error()}})
		return nil, usererr.Wrap(err, "backup failed: %v", err)
	}
	res := run.final.Walked
	if live && freeze == "" {
		run.consistent = false // running, and nothing to freeze it with
	}
	msg := ""
	if !run.consistent || res.ChangedWhileReadCount > 0 {
		msg = fmt.Sprintf("the environment could not stay frozen for the whole backup (--backup-freeze-max %s, or no freezer): the view may not be consistent; %d files changed while read", r.bk.cfg.FreezeMax, res.ChangedWhileReadCount)
		if run.consistent {
			msg = fmt.Sprintf("%d files changed while read, although the environment was frozen (written from outside it?)", res.ChangedWhileReadCount)
		}
		if len(res.ChangedWhileRead) > 0 {
			msg += ": " + strings.Join(res.ChangedWhileRead, ", ")
		}
		r.log.Warn("backup view not consistent", "env", e.id(), "changedWhileRead", res.ChangedWhileReadCount, "consistent", run.consistent)
	}
	done := &covev1.BackupProgress{Operation: "backup", StartedAt: prog.StartedAt, FilesDone: res.Files, BytesDone: res.Bytes,
		State: &covev1.SubStatus{Phase: subReady, Message: msg}}
	if !res.Changed {
		r.log.Debug("backup skipped: nothing changed", "env", e.id(), "trigger", trigger)
		done.State.Message = nothingChangedPrefix + prev.GetId()
		st.Backup.setProgress(done)
		return nil, nil
	}
	s := res.Summary
	b := &covev1.Backup{Id: name, EnvironmentId: e.id(), Time: timestamppb.New(began), Trigger: trigger, Files: s.Files, Bytes: s.Bytes,
		BytesNew: s.BytesNew, BytesReused: s.BytesReused, StoredBytes: s.StoredBytes, DurationMs: r.clock.Since(began).Milliseconds(),
		Previous: job.Previous, FrozenMs: run.frozen.Milliseconds(), Skipped: res.Skipped}
	if r.client != nil {
		b.RunnerId = r.client.id
	}
	for i, s := range b.Skipped {
		if len(s) > 4096 {
			b.Skipped[i] = s[:4096]
		}
	}
	validUTF8(b.ProtoReflect()) // paths are bytes; proto strings UTF-8
	st.Backup.Last, _ = protojson.Marshal(b)
	st.Backup.Reported = false
	st.Backup.setProgress(done)
	r.log.Info("backup taken", "env", e.id(), "backup", name, "trigger", trigger, "files", s.Files, "bytes", s.Bytes,
		"bytesNew", s.BytesNew, "stored", s.StoredBytes, "frozen", run.frozen, "skipped", res.SkippedCount)
	r.reportBackup(ctx, st)
	return b, nil
}

// nothingChangedPrefix starts a READY progress's message when no backup
// was taken because nothing changed since the one it names; the server
// reads it (server.NothingChangedPrefix): keep the two equal.
const nothingChangedPrefix = "skipped: nothing changed since "

// nothingHeldMessage is a READY progress's message when a backup was
// asked of a runner that holds no content for the environment: none was
// taken. The server reads it (server.NothingHeldMessage): keep them equal.
const nothingHeldMessage = "nothing to back up: this runner holds no content for it"

// reportBackup tells the server about the last backup, a few times; one
// it never heard of is in storage all the same, and is reported again at
// the next pass (also after a restart).
func (r *Runner) reportBackup(ctx context.Context, st *envState) {
	b := st.Backup.last()
	if b == nil || st.Backup.Reported || r.client == nil || b.GetTrigger() == triggerSalvage {
		return // a salvage is the salvage step's to report (step_salvage.go)
	}
	delay := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		_, err := r.client.api.ReportBackup(ctx, connect.NewRequest(&covev1.ReportBackupRequest{Backup: b}))
		if err == nil {
			st.Backup.Reported = true
			return
		}
		if c := connect.CodeOf(err); c == connect.CodeFailedPrecondition || c == connect.CodeInvalidArgument {
			// Refused for good (its manifest is not in storage, backups
			// are off, a value the server does not take): said, not
			// retried for ever.
			r.log.Error("the server refused to record the backup; not reported again", "env", st.ID, "backup", b.GetId(), "err", err)
			st.Backup.Reported = true
			return
		}
		if attempt == 3 || ctx.Err() != nil || connect.CodeOf(err) == connect.CodeUnimplemented {
			r.log.Warn("backup not reported to the server yet; reported again later", "env", st.ID, "backup", b.GetId(), "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-r.clock.After(delay):
		}
		delay *= 4
	}
}

// backupStep backs up a stopped environment: on stop (trigger "stop",
// after its containers are gone and before its file systems are
// unmounted), or when `cove env backup` asks while it is stopped. It owns
// the state's backup section.
type backupStep struct{ r *Runner }

func (s backupStep) run(ctx context.Context, e *stepEnv) error {
	st := e.st
	gen := e.env.GetSpec().GetBackupGeneration()
	manual := gen > st.Backup.Generation
	if !st.Content.Ready || len(backupSources(e.lay, st)) == 0 {
		// No content here (a clone or a restore that failed, trees
		// gone): a backup would be empty and become the "latest", which
		// the next runner would restore as ready content (REV-14). The
		// request is carried out with nothing taken; the server does not
		// read this as "the content is in backup X".
		st.Backup.setProgress(&covev1.BackupProgress{Operation: "backup", StartedAt: timestamppb.New(s.r.clock.Now()),
			State: &covev1.SubStatus{Phase: subReady, Message: nothingHeldMessage}})
		st.Backup.Dirty, st.Backup.Generation = false, max(st.Backup.Generation, gen)
		return nil
	}
	if last := st.Backup.last(); !st.Backup.Dirty && manual && last != nil {
		// Nothing ran since the last backup: it is this one. Said in the
		// progress, which the server reads as "nothing changed since"
		// (a move goes ahead from that backup).
		now := timestamppb.New(s.r.clock.Now())
		st.Backup.setProgress(&covev1.BackupProgress{Operation: "backup", StartedAt: now,
			State: &covev1.SubStatus{Phase: subReady, Message: nothingChangedPrefix + last.GetId()}})
		st.Backup.Generation = gen
		return nil
	}
	trigger := "stop"
	if manual && !st.Backup.Dirty {
		trigger = "manual"
	}
	err := s.backupRetrying(ctx, e, trigger)
	switch {
	case errors.Is(err, errBackupsDisabled):
		st.Backup.Dirty, st.Backup.Generation = false, gen
		return nil
	case err != nil && ctx.Err() == nil:
		// The stop goes on: the content stays on this runner's disk, the
		// failure shows in backup_progress, `cove env backup` tries again.
		s.r.log.Error("backup on stop failed", "env", e.id(), "err", err, "category", errdefs.CategoryOf(err))
		st.Backup.StopFailed = e.env.GetSpec().GetSpecVersion()
		if manual {
			st.Backup.Generation = gen
		}
		return nil
	case err != nil:
		return err
	}
	st.Backup.Dirty, st.Backup.Generation = false, gen
	return nil
}

// stopBackupRetries are the waits before a stop's backup is tried again
// when it failed for a reason that passes (storage or server unreachable,
// a timeout): the stop waits for them (about 2.5 min in all) rather than
// leave the work on this runner's disk only.
var stopBackupRetries = []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute}

// backupRetrying takes the stopped environment's backup, again after a
// transient failure (stopBackupRetries).
func (s backupStep) backupRetrying(ctx context.Context, e *stepEnv, trigger string) error {
	for attempt := 0; ; attempt++ {
		_, err := s.r.takeBackup(ctx, e, trigger, false, reportFunc(e.rep))
		cat := errdefs.CategoryOf(err)
		if err == nil || ctx.Err() != nil || attempt == len(stopBackupRetries) ||
			(cat != errdefs.CategoryUnavailable && cat != errdefs.CategoryDeadlineExceeded) {
			return err
		}
		wait := stopBackupRetries[attempt]
		s.r.log.Warn("backup on stop failed; trying again", "env", e.id(), "err", err, "in", wait)
		// Said while the stop waits (up to minutes): the failure and the
		// next try, not a stale "in progress" of the try that failed.
		failed := e.st.Backup.progress
		e.st.Backup.setProgress(&covev1.BackupProgress{Operation: "backup", StartedAt: failed.GetStartedAt(), State: &covev1.SubStatus{Phase: subInProgress,
			Message: fmt.Sprintf("%s; trying again in %s (try %d of %d)", failed.GetState().GetMessage(), wait, attempt+2, len(stopBackupRetries)+1)}})
		reportFunc(e.rep)()
		select {
		case <-s.r.clock.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// reportFunc has a step's status sent again, if its reporter can.
func reportFunc(rep reporter) func() {
	if p, ok := rep.(interface{ report() }); ok {
		return p.report
	}
	return func() {}
}

// backupObserve fills in what the backup and restore steps need to plan.
func backupObserve(env *covev1.Environment, st *envState, o *observed) {
	o.restore = restoreRequest(env, st) != nil
	if st == nil {
		return
	}
	spec := env.GetSpec()
	live := o.container != "" && o.container != runtime.StatusAbsent
	dirty := st.Content.Ready && (live || st.Backup.Dirty) && st.Backup.StopFailed != spec.GetSpecVersion()
	o.backup = dirty || spec.GetBackupGeneration() > st.Backup.Generation
	o.salvage = spec.GetSalvage() && spec.GetDesiredPhase() == phaseDeleted && needsSalvage(st, live) // step_salvage.go
}

// restoreRequest is the restore the environment is due, nil if none:
// spec.restore when its generation is not carried out yet; else, on a
// runner without any state for the environment (its disk lost, or the
// runner replaced; LostDisk once such a restore began), the latest
// backup the server knows of (status.last_backup) unless it holds no
// files, so that a start brings the work back instead of a fresh clone.
// A runner whose own clone or restore failed (state, no content) does not
// fall back: it clones again (REV-14).
func restoreRequest(env *covev1.Environment, st *envState) *covev1.RestoreRequest {
	return restoreRequestOf(env, st, st == nil || (!st.Content.Ready && st.Backup.LostDisk))
}

// restoreRequestOf is restoreRequest; lost: the runner is in the
// lost-disk case (the fallback to status.last_backup applies).
func restoreRequestOf(env *covev1.Environment, st *envState, lost bool) *covev1.RestoreRequest {
	spec := env.GetSpec()
	var done int64
	if st != nil {
		done = st.Backup.RestoreGeneration
	}
	if r := spec.GetRestore(); r.GetGeneration() > done && r.GetBackupId() != "" {
		return r
	}
	if lb := env.GetStatus().GetLastBackup(); lost && (st == nil || !st.Content.Ready) && lb.GetId() != "" && lb.GetFiles() > 0 {
		return &covev1.RestoreRequest{BackupId: env.GetStatus().GetLastBackup().GetId(), Generation: max(done, spec.GetRestore().GetGeneration())}
	}
	return nil
}
