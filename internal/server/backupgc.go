package server

import (
	"context"
	"errors"
	"time"

	"github.com/covedev/cove/internal/backupgc"
	"github.com/covedev/cove/internal/store"
)

// BackupGCConfig configures backup retention and garbage collection.
type BackupGCConfig struct {
	// Interval between runs; 0 disables retention and collection.
	Interval time.Duration
	Policy   backupgc.Policy
	// Grace: an unreferenced chunk is condemned only once this old, and
	// deleted at least this long after (backupgc.Options.Grace).
	Grace time.Duration
	// StaleUploads: each run aborts the storage's multipart uploads
	// started longer ago than this (S3 only; 0: never), whose parts a Put
	// cut off by a crash leaves behind, invisible and billed.
	StaleUploads time.Duration
}

// DefaultStaleUploads is the age past which an upload is abandoned: no
// Put of a chunk or manifest in progress is that old.
const DefaultStaleUploads = 24 * time.Hour

// staleAborter is a store with leftover multipart uploads
// (s3blob.Store.AbortStale).
type staleAborter interface {
	AbortStale(ctx context.Context, olderThan time.Duration) (int, error)
}

// DefaultBackupGCConfig is the configuration of the flags' defaults.
func DefaultBackupGCConfig() BackupGCConfig {
	return BackupGCConfig{Interval: time.Hour, Policy: backupgc.DefaultPolicy(), Grace: backupgc.DefaultGrace, StaleUploads: DefaultStaleUploads}
}

// RunBackupGC applies the backup retention policy and collects
// unreferenced chunks every cfg.Interval (the first run at once) until ctx
// is done. It does nothing when backups are disabled or the interval is 0.
// Several servers may run it on one storage at once.
func (s *Server) RunBackupGC(ctx context.Context, cfg BackupGCConfig) {
	if s.cfg.BackupStore == nil || cfg.Interval <= 0 {
		return
	}
	job := s.BackupGCJob(cfg)
	log := job.Log
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		start := s.now()
		rep, err := job.RunOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		attrs := []any{"backups", rep.Backups, "backupsDeleted", rep.BackupsDeleted,
			"manifests", rep.GC.Manifests, "chunks", rep.GC.Chunks, "condemned", rep.GC.Condemned,
			"chunksDeleted", rep.GC.Swept, "bytesDeleted", rep.GC.SweptBytes, "keptAgain", rep.GC.Kept,
			"orphanManifests", rep.GC.Orphans, "foreign", rep.GC.Foreign + rep.GC.ForeignManifests, "unknown", rep.GC.Unknown,
			"took", s.now().Sub(start).Round(time.Millisecond)}
		if err != nil {
			log.Error("backup retention and garbage collection", append(attrs, "err", err)...)
		} else {
			log.Info("backup retention and garbage collection", attrs...)
		}
		if a, ok := s.cfg.BackupStore.(staleAborter); ok && cfg.StaleUploads > 0 {
			n, err := a.AbortStale(ctx, cfg.StaleUploads)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				log.Error("abort stale multipart uploads", "aborted", n, "err", err)
			} else if n > 0 {
				log.Info("aborted stale multipart uploads", "aborted", n, "olderThan", cfg.StaleUploads)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// BackupGCJob returns the job RunBackupGC runs (nil Store when backups
// are disabled).
func (s *Server) BackupGCJob(cfg BackupGCConfig) *backupgc.Job {
	return &backupgc.Job{
		Store:   s.cfg.BackupStore,
		Catalog: &backupCatalog{s: s},
		Policy:  cfg.Policy,
		GC:      backupgc.Options{Grace: cfg.Grace},
		Now:     s.now,
		Log:     s.log.With("component", "backup-gc"),
	}
}

// backupCatalog is the store as backupgc sees it.
type backupCatalog struct{ s *Server }

func (c *backupCatalog) Organizations(ctx context.Context) ([]backupgc.Organization, error) {
	orgs, err := c.s.store.ListOrganizations(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]backupgc.Organization, 0, len(orgs))
	for _, o := range orgs {
		key, err := c.s.store.OrganizationBackupKey(ctx, o.ID)
		if err != nil {
			// Its chunks are left, as another organization's would be.
			c.s.log.Error("backup gc: cannot read an organization's backup key; its backups are not collected", "organization", o.ID, "err", err)
			continue
		}
		out = append(out, backupgc.Organization{ID: o.ID, Key: key})
	}
	return out, nil
}

func (c *backupCatalog) Backups(ctx context.Context, orgID string) ([]backupgc.BackupInfo, error) {
	bs, err := c.s.store.ListOrganizationBackups(ctx, orgID)
	if err != nil {
		return nil, err
	}
	out := make([]backupgc.BackupInfo, len(bs))
	for i, b := range bs {
		out[i] = backupgc.BackupInfo{ID: b.ID, EnvironmentID: b.EnvironmentID, Time: b.Time, Salvage: b.Trigger == triggerSalvage}
	}
	return out, nil
}

func (c *backupCatalog) Environment(ctx context.Context, id string) (backupgc.EnvInfo, error) {
	env, err := c.s.store.GetEnvironment(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return backupgc.EnvInfo{Deleted: true}, nil
	}
	if err != nil {
		return backupgc.EnvInfo{}, err
	}
	info := backupgc.EnvInfo{
		Deleted: env.GetSpec().GetDesiredPhase() == phaseDeleted || env.GetStatus().GetPhase() == phaseDeleted,
	}
	if r := env.GetSpec().GetRestore(); r != nil && r.GetGeneration() > env.GetStatus().GetObservedRestoreGeneration() {
		info.PendingRestore = r.GetBackupId()
	}
	return info, nil
}

func (c *backupCatalog) DeleteBackup(ctx context.Context, id string) error {
	return c.s.store.DeleteBackup(ctx, id)
}
