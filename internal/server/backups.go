package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/localblob"
	"github.com/covedev/cove/internal/blob/s3blob"
	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// OpenBackupStorage opens the backup storage st describes, as the server
// sees it, and checks with one cheap request (a listing of at most one
// object) that it answers and the credentials work, so a misconfigured
// server says so when it starts instead of at its first backup.
func OpenBackupStorage(ctx context.Context, st *covev1.BackupStorage, log *slog.Logger) (blob.Store, error) {
	var bs, probe blob.Store
	var where string
	switch st.GetKind() {
	case "dir":
		if st.GetDir() == "" {
			return nil, errors.New("backup storage: no directory given (--backup-dir)")
		}
		s, err := localblob.New(st.GetDir(), log)
		if err != nil {
			return nil, fmt.Errorf("backup directory %s: %w", st.GetDir(), err)
		}
		bs, probe, where = s, s, "directory "+st.GetDir()
	case "s3":
		cfg := s3blob.Config{Endpoint: st.GetEndpoint(), Region: st.GetRegion(), Bucket: st.GetBucket(), Prefix: st.GetPrefix(),
			AccessKeyID: st.GetAccessKeyId(), SecretAccessKey: st.GetSecretAccessKey(), SessionToken: st.GetSessionToken(),
			PathStyle: st.GetPathStyle(), Logger: log}
		s, err := s3blob.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("%w (check the --backup-s3-* flags)", err)
		}
		// The check tries once: a wrong setting fails the start at once.
		cfg.MaxAttempts = 1
		check, err := s3blob.New(cfg)
		if err != nil {
			return nil, err
		}
		bs, probe, where = s, check, fmt.Sprintf("S3 bucket %q at %s", st.GetBucket(), cmpOr(st.GetEndpoint(), "AWS"))
	default:
		return nil, fmt.Errorf("backup storage: unknown kind %q (dir or s3)", st.GetKind())
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, err := range probe.List(cctx, "manifests/") {
		if err != nil {
			return nil, fmt.Errorf("backup storage (%s) does not answer as it should: %w; fix the --backup-* flags, or run with --backups=false", where, err)
		}
		break
	}
	return bs, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// BackupStore is the server's handle on the backup storage (nil when
// backups are disabled), for retention and garbage collection.
func (s *Server) BackupStore() blob.Store { return s.cfg.BackupStore }

// backupsEnabled reports whether the server has backup storage.
func (s *Server) backupsEnabled() bool { return s.cfg.BackupStorage != nil }

var errBackupsDisabled = connect.NewError(connect.CodeFailedPrecondition,
	errors.New("backups are disabled on this server (its operator started it with --backups=false)"))

// runnerEnvironment is the environment id, if it is assigned to the
// calling runner and not deleted. Any other environment, existing or not,
// gets the same answer, so a runner learns nothing about others'.
func (s *Server) runnerEnvironment(ctx context.Context, rn store.Runner, id string) (*covev1.Environment, error) {
	env, err := s.store.GetEnvironment(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if err != nil || env.GetMetadata().GetRunnerId() != rn.ID || env.GetStatus().GetPhase() == phaseDeleted {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("environment %q is not assigned to this runner", id))
	}
	return env, nil
}

func (r *runnerService) GetBackupAccess(ctx context.Context, req *connect.Request[covev1.GetBackupAccessRequest]) (*connect.Response[covev1.GetBackupAccessResponse], error) {
	rn, err := runnerFrom(ctx)
	if err != nil {
		return nil, err
	}
	env, err := r.s.runnerEnvironment(ctx, rn, req.Msg.GetEnvironmentId())
	if err != nil {
		// A runner the environment left: its one salvage (salvage.go).
		if env, err = r.s.salvageAccess(ctx, rn, req.Msg.GetEnvironmentId(), err); err != nil {
			return nil, err
		}
	}
	if !r.s.backupsEnabled() {
		return connect.NewResponse(&covev1.GetBackupAccessResponse{}), nil
	}
	key, err := r.s.store.OrganizationBackupKey(ctx, env.GetMetadata().GetOrganizationId())
	if err != nil {
		return nil, fmt.Errorf("environment %s: %w", env.Id, err)
	}
	r.s.log.Debug("backup access", "env", env.Id, "runner", rn.ID) // never the key
	return connect.NewResponse(&covev1.GetBackupAccessResponse{Storage: proto.CloneOf(r.s.cfg.BackupStorage), Key: key}), nil
}

// What a runner may report about a backup.
const (
	maxBackupIDLen      = 200
	maxBackupSkipped    = 100
	maxBackupSkippedLen = 4 << 10
	maxBackupClockSkew  = time.Minute
)

var backupTriggers = map[string]bool{"stop": true, "periodic": true, "manual": true, "before-restore": true}

// checkBackupID checks a backup id (its manifest's name): printable ASCII
// path segments, nothing a terminal or a storage key would misread, and it
// names an environment's backup: "<environment id>/...".
func checkBackupID(field, id, envID string) error {
	if id == "" || len(id) > maxBackupIDLen {
		return invalidField(field, "must be 1 to %d bytes, not %d", maxBackupIDLen, len(id))
	}
	for _, seg := range strings.Split(id, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return invalidField(field, "%q has an empty, '.' or '..' segment", id)
		}
		for _, c := range seg {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				return invalidField(field, "%q: use letters, digits, '-', '_', '.' and '/' only", id)
			}
		}
	}
	if err := blob.ValidateKey("manifests/" + id); err != nil {
		return invalidField(field, "%q is not a valid storage name: %v", id, err)
	}
	if envID != "" && !strings.HasPrefix(id, envID+"/") {
		return invalidField(field, "%q must start with the environment's id and a '/' (%s/...)", id, envID)
	}
	return nil
}

// checkReportedBackup validates every field of a reported backup and
// returns the record to store.
func (s *Server) checkReportedBackup(b *covev1.Backup, env *covev1.Environment, rn store.Runner) (store.Backup, error) {
	return s.checkReportedBackupAs(b, env, rn, backupTriggers)
}

// checkReportedBackupAs is checkReportedBackup with the triggers taken.
func (s *Server) checkReportedBackupAs(b *covev1.Backup, env *covev1.Environment, rn store.Runner, triggers map[string]bool) (store.Backup, error) {
	if b == nil {
		return store.Backup{}, invalidField("backup", "is required")
	}
	if b.GetEnvironmentId() != env.Id {
		return store.Backup{}, invalidField("backup.environmentId", "must be %q", env.Id)
	}
	if err := checkBackupID("backup.id", b.GetId(), env.Id); err != nil {
		return store.Backup{}, err
	}
	if p := b.GetPrevious(); p != "" {
		if err := checkBackupID("backup.previous", p, ""); err != nil {
			return store.Backup{}, err
		}
	}
	if r := b.GetRunnerId(); r != "" && r != rn.ID {
		return store.Backup{}, invalidField("backup.runnerId", "must be the reporting runner's id (or empty)")
	}
	if !triggers[b.GetTrigger()] {
		names := slices.Sorted(maps.Keys(triggers))
		return store.Backup{}, invalidField("backup.trigger", "%.40q is not one of %s", b.GetTrigger(), strings.Join(names, ", "))
	}
	for _, n := range []struct {
		name string
		v    int64
	}{{"files", b.GetFiles()}, {"bytes", b.GetBytes()}, {"bytesNew", b.GetBytesNew()}, {"bytesReused", b.GetBytesReused()},
		{"storedBytes", b.GetStoredBytes()}, {"durationMs", b.GetDurationMs()}, {"frozenMs", b.GetFrozenMs()}} {
		if n.v < 0 {
			return store.Backup{}, invalidField("backup."+n.name, "must not be negative (%d)", n.v)
		}
	}
	if b.GetTime() == nil || !b.GetTime().IsValid() || b.GetTime().AsTime().Unix() <= 0 {
		return store.Backup{}, invalidField("backup.time", "is required")
	}
	// The runner's time is shown; the server's receive time orders the
	// records. A time in the future (a runner clock ahead) is recorded as
	// the server's now: refusing it would lose the backup (REV-4).
	at, now := b.GetTime().AsTime(), s.now()
	if at.After(now) {
		if at.After(now.Add(maxBackupClockSkew)) {
			s.log.Warn("backup time in the future: recorded with the server's time; check the runner's clock", "runner", rn.ID,
				"backup", b.GetId(), "reported", at.UTC().Format(time.RFC3339), "server", now.UTC().Format(time.RFC3339))
		}
		at = now
	}
	if n := len(b.GetSkipped()); n > maxBackupSkipped {
		return store.Backup{}, invalidField("backup.skipped", "lists %d paths, at most %d", n, maxBackupSkipped)
	}
	skipped := make([]string, 0, len(b.GetSkipped()))
	for _, p := range b.GetSkipped() {
		if len(p) > maxBackupSkippedLen {
			return store.Backup{}, invalidField("backup.skipped", "a path of %d bytes, at most %d", len(p), maxBackupSkippedLen)
		}
		skipped = append(skipped, cleanPath(p))
	}
	return store.Backup{ID: b.GetId(), EnvironmentID: env.Id, OrganizationID: env.GetMetadata().GetOrganizationId(), RunnerID: rn.ID,
		Trigger: b.GetTrigger(), Previous: b.GetPrevious(), Time: at.UTC(), ReceivedAt: now.UTC(),
		Files: b.GetFiles(), Bytes: b.GetBytes(), BytesNew: b.GetBytesNew(), BytesReused: b.GetBytesReused(),
		StoredBytes: b.GetStoredBytes(), DurationMS: b.GetDurationMs(), FrozenMS: b.GetFrozenMs(), Skipped: skipped}, nil
}

// cleanPath drops control characters (and invalid UTF-8) from a path
// shown to users, so no escape sequence reaches a terminal.
func cleanPath(p string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\uFFFD' {
			return -1
		}
		return r
	}, strings.ToValidUTF8(p, ""))
}

func (r *runnerService) ReportBackup(ctx context.Context, req *connect.Request[covev1.ReportBackupRequest]) (*connect.Response[covev1.ReportBackupResponse], error) {
	rn, err := runnerFrom(ctx)
	if err != nil {
		return nil, err
	}
	if !r.s.backupsEnabled() {
		return nil, errBackupsDisabled
	}
	env, err := r.s.runnerEnvironment(ctx, rn, req.Msg.GetBackup().GetEnvironmentId())
	if err != nil {
		if req.Msg.GetBackup().GetTrigger() == triggerSalvage { // salvage.go
			if err := r.s.reportSalvage(ctx, rn, req.Msg.GetBackup(), err); err != nil {
				return nil, err
			}
			return connect.NewResponse(&covev1.ReportBackupResponse{}), nil
		}
		return nil, err
	}
	rec, err := r.s.checkReportedBackup(req.Msg.GetBackup(), env, rn)
	if err != nil {
		return nil, err
	}
	if err := r.s.manifestStored(ctx, rec.ID); err != nil {
		r.s.log.Warn("backup not recorded", "env", env.Id, "backup", rec.ID, "runner", rn.ID, "err", err)
		return nil, err
	}
	err = r.s.store.CreateBackup(ctx, rec)
	if errors.Is(err, store.ErrAlreadyExists) {
		// A retried report of the same backup succeeds; another
		// environment's id is refused; a released runner's salvage
		// claiming this runner's backup gives it back (salvage.go).
		err = r.s.reportedAgain(ctx, env.Id, rec)
	}
	if err != nil {
		return nil, err
	}
	if err := r.s.setLastBackup(ctx, env.Id); err != nil {
		return nil, err
	}
	r.s.log.Info("backup recorded", "env", env.Id, "backup", rec.ID, "trigger", rec.Trigger, "files", rec.Files, "bytesNew", rec.BytesNew, "runner", rn.ID)
	return connect.NewResponse(&covev1.ReportBackupResponse{}), nil
}

// manifestStored checks that a reported backup's manifest is in the
// server's backup storage (one Stat), so no record names a backup that
// cannot be restored: one deleted as an orphan while its runner was away
// and reported again on its return (REV-13).
func (s *Server) manifestStored(ctx context.Context, id string) error {
	if s.cfg.BackupStore == nil {
		return nil
	}
	_, err := s.cfg.BackupStore.Stat(ctx, "manifests/"+id)
	switch {
	case err == nil:
		return nil
	case blob.IsNotFound(err):
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"backup %q is not in the backup storage (never written there, or deleted as unrecorded while the runner was away): not recorded; the next backup is", id))
	default:
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("backup %q: the backup storage does not answer: %w; report it again later", id, err))
	}
}

// setLastBackup sets the environment's status.last_backup to its latest
// record (by the server's receive time), salvages left out (salvage.go).
// The server alone sets it, from its own records of this environment
// (REV-4).
func (s *Server) setLastBackup(ctx context.Context, id string) error {
	bs, err := s.store.ListBackups(ctx, id)
	if bs = regularBackups(bs); err != nil || len(bs) == 0 {
		return err
	}
	latest := backupProto(bs[0])
	_, err = s.store.UpdateEnvironment(ctx, id, func(e *covev1.Environment) error {
		if e.Status == nil {
			e.Status = &covev1.EnvironmentStatus{}
		}
		e.Status.LastBackup = latest
		return nil
	})
	return err
}

func backupProto(b store.Backup) *covev1.Backup {
	return &covev1.Backup{Id: b.ID, EnvironmentId: b.EnvironmentID, Time: timestamppb.New(b.Time), Trigger: b.Trigger,
		Files: b.Files, Bytes: b.Bytes, BytesNew: b.BytesNew, BytesReused: b.BytesReused, StoredBytes: b.StoredBytes,
		DurationMs: b.DurationMS, RunnerId: b.RunnerID, Previous: b.Previous, FrozenMs: b.FrozenMS, Skipped: b.Skipped}
}

// keepServerStatus keeps what the server owns in an environment's status
// whatever its runner reports: the record of the last backup (set only
// from the server's records of this environment, by ReportBackup and
// moves: a runner's claim, naming any id and any time, is ignored —
// REV-4), and the warning of a move from a lost runner saying which
// changes are not in the backup it restored (until another restore).
func keepServerStatus(env *covev1.Environment, st *covev1.EnvironmentStatus) {
	prev := env.GetStatus()
	st.LastBackup = prev.GetLastBackup()
	restored := env.GetSpec().GetRestore().GetBackupId()
	if env.GetSpec().GetRestore().GetBackupFirst() {
		restored = "" // a user's restore since: the move is past
	}
	keepSalvagedWarnings(prev, st) // salvage.go
	for _, w := range prev.GetWarnings() {
		if restored != "" && strings.HasPrefix(w, movedWarningPrefix) && strings.Contains(w, "("+restored+")") && !slices.Contains(st.GetWarnings(), w) {
			st.Warnings = append(st.Warnings, w)
		}
	}
}
