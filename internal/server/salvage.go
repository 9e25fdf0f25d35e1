package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// Salvage on release (docs/backups.md, "When an environment leaves a
// runner"): a runner the environment left (releases.go) may hold work
// newer than the backup the environment was moved from (it lost its
// network, not its disk). Before it deletes its copy, it takes one last
// backup of it, trigger "salvage", when the copy changed since its last
// recorded backup. The server grants exactly that to a released runner,
// and nothing else:
//   - backup access for environment E while it holds a release of E, E
//     lives on (not deleted) and no salvage of E is recorded for that
//     release;
//   - one salvage report per release, every field checked like any report
//     and its manifest in storage; a retry of the same report succeeds,
//     another id is refused;
//   - the record is listed with a note, never made the environment's
//     latest (status.last_backup) nor picked by a move, a reschedule or a
//     restore without --backup: the environment runs elsewhere from the
//     older backup, and the user rolls forward by naming it;
//   - once the runner reports its copy deleted the release ends, and with
//     it all of this.
// A deleted environment's copy is not salvaged: the user deleted it.

// triggerSalvage is a salvage backup's trigger.
const triggerSalvage = "salvage"

// salvagedWarningPrefix starts the status warning that says a salvage was
// recorded; the server keeps it across runner reports until the user
// restores a backup (RestoreEnvironment clears it).
const salvagedWarningPrefix = "salvaged: "

// salvageMu orders the check "no salvage yet for this release" and the
// record of one, so two reports at once cannot both pass it.
var salvageMu sync.Mutex

// regularBackups is bs without salvage records: what "the latest", moves
// and restores by default consider.
func regularBackups(bs []store.Backup) []store.Backup {
	return slices.DeleteFunc(slices.Clone(bs), func(b store.Backup) bool { return b.Trigger == triggerSalvage })
}

// salvaged is the salvage recorded for release rel, if any: a salvage
// record of its environment by its runner, received since the release.
func salvaged(bs []store.Backup, rel store.Release) (store.Backup, bool) {
	for _, b := range bs {
		if b.Trigger == triggerSalvage && b.RunnerID == rel.RunnerID && !b.ReceivedAt.Before(rel.CreatedAt) {
			return b, true
		}
	}
	return store.Backup{}, false
}

// salvageTarget is environment id when runner rn holds a release of it and
// it lives on (not deleted), with the release and the salvage recorded
// for it ("" if none). ok is false otherwise: the caller answers as it
// does for an environment that is not the runner's.
func (s *Server) salvageTarget(ctx context.Context, runnerID, id string) (env *covev1.Environment, rel store.Release, done string, ok bool, err error) {
	rel, err = s.store.GetRelease(ctx, id, runnerID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, rel, "", false, nil
	}
	if err != nil {
		return nil, rel, "", false, err
	}
	env, err = s.store.GetEnvironment(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, rel, "", false, nil
	}
	if err != nil {
		return nil, rel, "", false, err
	}
	// A runner the environment never ran on holds none of the user's
	// changes: nothing of it is offered to the user as their work
	// (review REV-S8-3).
	if notDeleted(env) != nil || env.GetMetadata().GetRunnerId() == runnerID || !rel.Ran {
		return nil, rel, "", false, nil
	}
	bs, err := s.store.ListBackups(ctx, id)
	if err != nil {
		return nil, rel, "", false, err
	}
	if b, ok := salvaged(bs, rel); ok {
		done = b.ID
	}
	return env, rel, done, true, nil
}

// wantsSalvage is what a released copy's spec.salvage says: the
// environment lives on and no salvage is recorded for the release yet.
func (s *Server) wantsSalvage(ctx context.Context, runnerID, id string) (bool, error) {
	_, _, done, ok, err := s.salvageTarget(ctx, runnerID, id)
	return ok && done == "", err
}

// salvageAccess is GetBackupAccess for a runner the environment left: the
// environment when it may take its one salvage backup; refused (the
// caller's error for "not this runner's") otherwise.
func (s *Server) salvageAccess(ctx context.Context, rn store.Runner, id string, refused error) (*covev1.Environment, error) {
	env, _, done, ok, err := s.salvageTarget(ctx, rn.ID, id)
	if err != nil {
		return nil, err
	}
	if !ok || done != "" {
		return nil, refused
	}
	s.log.Info("backup access for a salvage", "env", id, "runner", rn.ID)
	return env, nil
}

// reportSalvage records runner rn's salvage backup b of an environment
// that left it (refused: the caller's error for "not this runner's").
func (s *Server) reportSalvage(ctx context.Context, rn store.Runner, b *covev1.Backup, refused error) error {
	salvageMu.Lock()
	defer salvageMu.Unlock()
	env, _, done, ok, err := s.salvageTarget(ctx, rn.ID, b.GetEnvironmentId())
	if err != nil {
		return err
	}
	if !ok {
		return refused
	}
	rec, err := s.checkReportedBackupAs(b, env, rn, map[string]bool{triggerSalvage: true})
	if err != nil {
		return err
	}
	switch {
	case done == rec.ID:
		return nil // a retried report
	case done != "":
		return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf(
			"this runner's salvage of environment %s is recorded already (%s): at most one per release; delete the copy", env.Id, done))
	}
	if err := s.manifestStored(ctx, rec.ID); err != nil {
		s.log.Warn("salvage not recorded", "env", env.Id, "backup", rec.ID, "runner", rn.ID, "err", err)
		return err
	}
	if err := s.store.CreateBackup(ctx, rec); errors.Is(err, store.ErrAlreadyExists) {
		// Another record's id (never overwritten, never taken as this one).
		return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("backup id %q is taken", rec.ID))
	} else if err != nil {
		return err
	}
	rn2 := cmpOr(rn.Name, rn.ID)
	warning := fmt.Sprintf(salvagedWarningPrefix+"runner %q still held a copy of this environment newer than the backup it was moved from; that copy is backup %s (%d files), not restored: "+
		"`cove env restore %s --backup %s` brings it back (your current state is backed up first)",
		rn2, rec.ID, rec.Files, env.GetMetadata().GetName(), rec.ID)
	if _, err := s.store.UpdateEnvironment(ctx, env.Id, func(e *covev1.Environment) error {
		if e.Status == nil {
			e.Status = &covev1.EnvironmentStatus{}
		}
		e.Status.Warnings = append(e.Status.Warnings, warning)
		return nil
	}); err != nil {
		return err // recorded: the runner's retry succeeds as a retry
	}
	s.log.Warn("salvage recorded: a copy newer than the backup the environment was moved from", "env", env.Id, "backup", rec.ID,
		"runner", rn.ID, "files", rec.Files, "bytesNew", rec.BytesNew)
	return nil
}

// salvageNote is what `cove env backups` says of a salvage record.
func (s *Server) salvageNote(ctx context.Context, b store.Backup) string {
	name := b.RunnerID
	if rn, err := s.store.GetRunner(ctx, b.RunnerID); err == nil {
		name = rn.Name
	}
	return fmt.Sprintf("copy left on runner %q when the environment moved; newer than the backup it was moved from; not restored unless named (--backup)", name)
}

// keepSalvagedWarnings keeps the server's salvage warnings of prev in st
// (a runner's own warning of that form is dropped: the server says it).
func keepSalvagedWarnings(prev, st *covev1.EnvironmentStatus) {
	st.Warnings = slices.DeleteFunc(st.Warnings, func(w string) bool { return strings.HasPrefix(w, salvagedWarningPrefix) })
	for _, w := range prev.GetWarnings() {
		if strings.HasPrefix(w, salvagedWarningPrefix) {
			st.Warnings = append(st.Warnings, w)
		}
	}
}

// salvagedWarnings is the salvage warnings of st.
func salvagedWarnings(st *covev1.EnvironmentStatus) []string {
	var out []string
	for _, w := range st.GetWarnings() {
		if strings.HasPrefix(w, salvagedWarningPrefix) {
			out = append(out, w)
		}
	}
	return out
}

// reportedAgain answers the environment's own runner reporting backup rec
// whose id is recorded already. A retried report succeeds; another
// environment's id is refused. A salvage record under that id is a
// released runner that read the live runner's manifest name in the
// storage (it holds bucket credentials, docs/backups.md REV-2) and
// reported it as its salvage before the live runner did, so the backup
// would never become the latest nor count for a move: the live runner's
// record replaces it, with the salvage warning that named it.
func (s *Server) reportedAgain(ctx context.Context, envID string, rec store.Backup) error {
	salvageMu.Lock()
	defer salvageMu.Unlock()
	bs, err := s.store.ListBackups(ctx, envID)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(bs, func(b store.Backup) bool { return b.ID == rec.ID })
	if i < 0 {
		return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("backup id %q is taken", rec.ID))
	}
	old := bs[i]
	if old.Trigger != triggerSalvage || old.RunnerID == rec.RunnerID {
		return nil // a retry
	}
	if err := s.store.DeleteBackup(ctx, old.ID); err != nil {
		return err
	}
	if err := s.store.CreateBackup(ctx, rec); err != nil {
		return err
	}
	named := "backup " + old.ID + " ("
	if _, err := s.store.UpdateEnvironment(ctx, envID, func(e *covev1.Environment) error {
		if e.Status != nil {
			e.Status.Warnings = slices.DeleteFunc(e.Status.Warnings, func(w string) bool {
				return strings.HasPrefix(w, salvagedWarningPrefix) && strings.Contains(w, named)
			})
		}
		return nil
	}); err != nil {
		return err
	}
	s.log.Warn("a released runner reported this environment's runner's backup as its salvage: the record is the environment runner's again",
		"env", envID, "backup", old.ID, "claimedBy", old.RunnerID, "runner", rec.RunnerID)
	return nil
}
