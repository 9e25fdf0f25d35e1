package runner

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/covedev/cove/internal/blob/s3blob/s3test"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// TestBackupAndRestoreOnS3: the backup child stores a stop's backup on
// S3-compatible storage (versitygw on loopback, as the server hands it
// out: endpoint, bucket, prefix, credentials, path-style) and a start on
// a runner that lost the environment's directory restores it from there.
func TestBackupAndRestoreOnS3(t *testing.T) {
	c, srv := newBackupWorld(t)
	s3 := s3test.Start(t)
	cfg := s3.Config(s3.Bucket(t), "cove/")
	srv.s3 = &covev1.BackupStorage{Kind: "s3", Endpoint: cfg.Endpoint, Region: cfg.Region, Bucket: cfg.Bucket, Prefix: cfg.Prefix,
		AccessKeyId: cfg.AccessKeyID, SecretAccessKey: cfg.SecretAccessKey, PathStyle: true}
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	lay := c.runner(0, false).layout(env.Id)
	writeFile(t, filepath.Join(lay.Workspace(), "app/work.txt"), "on s3\n")
	writeFile(t, filepath.Join(lay.Upper(), "usr/local/bin/tool"), "installed\n")
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	got := srv.backups()
	if len(got) != 1 || got[0].GetTrigger() != "stop" || got[0].GetStoredBytes() == 0 {
		t.Fatalf("reported %v, want one stop backup stored on S3", got)
	}
	if m := manifests(t, srv.storage); len(m) != 0 {
		t.Fatalf("the directory storage holds %v: the backup did not go to S3", m)
	}

	if err := os.RemoveAll(lay.Dir); err != nil {
		t.Fatal(err)
	}
	env.Status = &covev1.EnvironmentStatus{LastBackup: got[0]} // as the server keeps it
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	if got := readFile(t, filepath.Join(lay.Workspace(), "app/work.txt")); got != "on s3\n" {
		t.Errorf("work.txt %q after a restore from S3", got)
	}
	if got := readFile(t, filepath.Join(lay.Upper(), "usr/local/bin/tool")); got != "installed\n" {
		t.Errorf("tool %q after a restore from S3", got)
	}
	if c.clones != 1 {
		t.Errorf("cloned %d times, want the backup restored instead of a second clone", c.clones)
	}
}
