package backupgc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob"
)

// Organization is an organization whose backups a Job manages.
type Organization struct {
	ID  string
	Key []byte // its backup key (backuprepo.KeySize bytes)
}

// Catalog is what a Job needs of the server's records.
type Catalog interface {
	// Organizations lists the organizations with their backup keys. An
	// organization whose key cannot be read is left out (its chunks are
	// then never collected, as if another's).
	Organizations(ctx context.Context) ([]Organization, error)
	// Backups lists an organization's backup records.
	Backups(ctx context.Context, orgID string) ([]BackupInfo, error)
	// Environment says whether an environment is deleted (and since
	// when) and which backup a pending restore names.
	Environment(ctx context.Context, envID string) (EnvInfo, error)
	// DeleteBackup deletes a backup's record; a missing one is no error.
	DeleteBackup(ctx context.Context, id string) error
}

// MinOrphanGrace is the least time a manifest without a record is kept:
// a runner may still be reporting it.
const MinOrphanGrace = 2 * backuprepo.MaxWriterAge

// Report is what one run of a Job did.
type Report struct {
	Backups        int // backup records looked at
	BackupsDeleted int
	GC             Stats
}

// Job applies the retention policy to every organization's backups, then
// collects unreferenced chunks.
type Job struct {
	Store   blob.Store
	Catalog Catalog
	Policy  Policy
	GC      Options // its Now and Log are the job's
	Now     func() time.Time
	Log     *slog.Logger
}

// RunOnce does one pass. Errors of one organization or environment do
// not stop the others; they are joined in the error returned.
func (j *Job) RunOnce(ctx context.Context) (Report, error) {
	now, log := j.Now, j.Log
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var rep Report
	orgs, err := j.Catalog.Organizations(ctx)
	if err != nil {
		return rep, fmt.Errorf("backup retention: %w", err)
	}
	var errs []error
	keys := make([]*backuprepo.Key, 0, len(orgs))
	records := map[string]map[string]bool{}
	for _, o := range orgs {
		k, err := backuprepo.ParseKey(o.Key)
		if err != nil {
			errs = append(errs, fmt.Errorf("organization %s: %w", o.ID, err))
			continue
		}
		keys = append(keys, k)
		if err := j.retain(ctx, o.ID, backuprepo.New(j.Store, k, log), now(), &rep, log); err != nil {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("organization %s: %w", o.ID, err))
			continue
		}
		// Read after retention: a record listed here and deleted since
		// only keeps its manifest one run longer.
		bs, err := j.Catalog.Backups(ctx, o.ID)
		if err != nil {
			errs = append(errs, fmt.Errorf("organization %s: %w", o.ID, err))
			continue
		}
		names := make(map[string]bool, len(bs))
		for _, b := range bs {
			names[b.ID] = true
		}
		records[k.ID()] = names
	}
	opts := j.GC
	opts.Now, opts.Log = now, log
	if opts.OrphanGrace == 0 {
		opts.OrphanGrace = max(j.Policy.DeletedGrace, MinOrphanGrace)
	}
	opts.Records = records
	rep.GC, err = NewCollector(j.Store, keys, opts).Run(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("backup gc: %w", err))
	}
	return rep, errors.Join(errs...)
}

// retain deletes the organization's backups the policy does not keep:
// the manifest first, then the record, so a crash in between leaves a
// record without manifest, which the next run deletes (deleting a missing
// manifest succeeds).
func (j *Job) retain(ctx context.Context, orgID string, repo *backuprepo.Repo, now time.Time, rep *Report, log *slog.Logger) error {
	backups, err := j.Catalog.Backups(ctx, orgID)
	if err != nil {
		return err
	}
	rep.Backups += len(backups)
	byEnv := map[string][]BackupInfo{}
	var order []string
	for _, b := range backups {
		if _, ok := byEnv[b.EnvironmentID]; !ok {
			order = append(order, b.EnvironmentID)
		}
		byEnv[b.EnvironmentID] = append(byEnv[b.EnvironmentID], b)
	}
	var errs []error
	for _, envID := range order {
		env, err := j.Catalog.Environment(ctx, envID)
		if err == nil && env.Deleted && env.DeletedAt.IsZero() {
			env.DeletedAt, err = j.deletedSince(ctx, repo, envID, now)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", envID, err))
			continue
		}
		kept := 0
		for _, d := range j.Policy.Plan(now, env, byEnv[envID]) {
			if d.Keep {
				kept++
				continue
			}
			if err := j.deleteManifest(ctx, d.Backup.ID, repo.Key().ID()); err != nil {
				errs = append(errs, fmt.Errorf("backup %s: delete its manifest: %w", d.Backup.ID, err))
				continue
			}
			if err := j.Catalog.DeleteBackup(ctx, d.Backup.ID); err != nil {
				errs = append(errs, fmt.Errorf("backup %s: delete its record: %w", d.Backup.ID, err))
				continue
			}
			rep.BackupsDeleted++
			log.Info("backup deleted", "backup", d.Backup.ID, "environment", envID, "taken", d.Backup.Time, "reason", d.Reason)
		}
		if env.Deleted && kept == 0 {
			if err := repo.Store().Delete(ctx, repo.GCKey(deletedNote(envID))); err != nil {
				errs = append(errs, fmt.Errorf("environment %s: %w", envID, err))
			}
		}
	}
	return errors.Join(errs...)
}

// deletedNote is the garbage collection object that records when the job
// first saw the environment deleted (the records do not say when it was).
func deletedNote(envID string) string {
	sum := sha256.Sum256([]byte(envID))
	return "deleted/" + hex.EncodeToString(sum[:16])
}

// deletedSince returns when the job first saw envID deleted, recording now
// when it is the first time: the grace of its backups runs from then (at
// most one run after the deletion), whichever server runs the job.
func (j *Job) deletedSince(ctx context.Context, repo *backuprepo.Repo, envID string, now time.Time) (time.Time, error) {
	doc, err := repo.GetGCObject(ctx, deletedNote(envID))
	if err == nil {
		var t time.Time
		if err := t.UnmarshalText(doc); err == nil {
			return t, nil
		}
	} else if !blob.IsNotFound(err) && !backuprepo.IsCorrupt(err) {
		return time.Time{}, err
	}
	// Missing, or unreadable (then rewritten: the grace starts again).
	doc, _ = now.UTC().MarshalText()
	return now, repo.PutGCObject(ctx, deletedNote(envID), doc)
}

// deleteManifest deletes the manifest of backup id, if it is sealed with
// the organization's key: a manifest of that name sealed with another key
// is another organization's, and is left.
func (j *Job) deleteManifest(ctx context.Context, id, keyID string) error {
	key := backuprepo.ManifestKey(id)
	h, ok, err := readHeader(ctx, j.Store, key)
	switch {
	case blob.IsNotFound(err):
		return nil // deleted already (by a run that crashed before deleting the record)
	case err != nil:
		return err
	case !ok || h.KeyID != keyID:
		return fmt.Errorf("%s is not this organization's manifest; left in place", key)
	}
	return j.Store.Delete(ctx, key)
}
