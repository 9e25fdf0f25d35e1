package server_test

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/covedev/cove/internal/backupgc"
	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob/localblob"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/server/servertest"
	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// The server's retention job reads the records as backupgc needs them: the
// newest backup and the one a pending restore names are kept, the others
// past the policy go (manifest and record), and a deleted environment's
// backups go after the grace.
func TestBackupRetentionJob(t *testing.T) {
	ctx := context.Background()
	bs, err := localblob.New(filepath.Join(t.TempDir(), "backups"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	s := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.BackupStore = bs
		c.BackupStorage = &covev1.BackupStorage{Kind: "dir", Dir: "/unused"}
	}})
	admin, err := s.Store.GetUserByName(ctx, s.Admin.Name)
	if err != nil {
		t.Fatal(err)
	}
	org := admin.OrganizationID
	raw, err := s.Store.OrganizationBackupKey(ctx, org)
	if err != nil {
		t.Fatal(err)
	}
	key, err := backuprepo.ParseKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	repo := backuprepo.New(bs, key, nil)

	newEnv := func(id string, mutate func(*covev1.Environment)) {
		env := &covev1.Environment{Id: id,
			Metadata: &covev1.EnvironmentMetadata{Id: id, OrganizationId: org, OwnerId: admin.ID, Name: id},
			Spec:     &covev1.EnvironmentSpec{DesiredPhase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED},
			Status:   &covev1.EnvironmentStatus{}}
		if mutate != nil {
			mutate(env)
		}
		if _, err := s.Store.CreateEnvironment(ctx, env); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	addBackup := func(id, env string, age time.Duration) {
		w, err := repo.NewWriter(ctx, id, backuprepo.Metadata{Time: now.Add(-age)})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddFile(ctx, backuprepo.Entry{Path: "f", Mode: 0o644}, bytes.NewReader([]byte(id))); err != nil {
			t.Fatal(err)
		}
		if _, err := w.CommitGCSafe(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Store.CreateBackup(ctx, store.Backup{ID: id, EnvironmentID: env, OrganizationID: org, Trigger: "manual", Time: now.Add(-age)}); err != nil {
			t.Fatal(err)
		}
	}
	newEnv("env-live", func(e *covev1.Environment) {
		e.Spec.Restore = &covev1.RestoreRequest{BackupId: "live-1", Generation: 1}
	})
	newEnv("env-gone", func(e *covev1.Environment) {
		e.Spec.DesiredPhase = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED
		e.Status.Phase = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED
	})
	addBackup("live-1", "env-live", 3*time.Hour)
	addBackup("live-2", "env-live", 2*time.Hour)
	addBackup("live-3", "env-live", time.Hour)
	addBackup("gone-1", "env-gone", time.Hour)

	cfg := server.DefaultBackupGCConfig()
	cfg.Policy = backupgc.Policy{KeepLast: 1, DeletedGrace: 0}
	rep, err := s.BackupGCJob(cfg).RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.BackupsDeleted != 2 {
		t.Fatalf("deleted %d backups, want 2", rep.BackupsDeleted)
	}
	left, err := s.Store.ListOrganizationBackups(ctx, org)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, b := range left {
		ids = append(ids, b.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"live-1", "live-3"}) {
		t.Fatalf("records left: %v, want live-1 (pending restore) and live-3 (newest)", ids)
	}
	for id, want := range map[string]bool{"live-1": true, "live-2": false, "live-3": true, "gone-1": false} {
		_, err := bs.Stat(ctx, backuprepo.ManifestKey(id))
		if (err == nil) != want {
			t.Errorf("manifest of %s: present %v, want %v", id, err == nil, want)
		}
	}
}
