package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/covedev/cove/internal/server"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/pflag"
)

// envBackupS3Secret names the environment variable holding the S3 secret
// access key (never a flag value: flags show in ps and shell history).
const envBackupS3Secret = "COVE_BACKUP_S3_SECRET_ACCESS_KEY"

// serverBackupOptions say where the server keeps backups.
type serverBackupOptions struct {
	enabled         bool
	dir             string
	s3Endpoint      string
	s3Region        string
	s3Bucket        string
	s3Prefix        string
	s3PathStyle     bool
	s3AccessKeyID   string
	s3SecretFile    string
	rescheduleAfter time.Duration
}

func addServerBackupFlags(f *pflag.FlagSet, o *serverBackupOptions) {
	f.BoolVar(&o.enabled, "backups", true, "back environments up (false: no backups, moves or restores)")
	f.StringVar(&o.dir, "backup-dir", "", "keep backups in this directory (default: <data-dir>/backups; runners on other hosts need it on a shared file system)")
	f.StringVar(&o.s3Endpoint, "backup-s3-endpoint", "", "keep backups on S3-compatible storage at this URL (empty with --backup-s3-bucket: AWS)")
	f.StringVar(&o.s3Region, "backup-s3-region", "us-east-1", "S3 region (any name off AWS)")
	f.StringVar(&o.s3Bucket, "backup-s3-bucket", "", "S3 bucket for backups (setting it chooses S3 over a directory)")
	f.StringVar(&o.s3Prefix, "backup-s3-prefix", "", "put every backup object under this prefix (ending with '/')")
	f.BoolVar(&o.s3PathStyle, "backup-s3-path-style", false, "address the bucket as endpoint/bucket (most self-hosted S3 servers)")
	f.StringVar(&o.s3AccessKeyID, "backup-s3-access-key-id", "", "S3 access key id; the secret comes from --backup-s3-secret-access-key-file or $"+envBackupS3Secret)
	f.StringVar(&o.s3SecretFile, "backup-s3-secret-access-key-file", "", "file holding the S3 secret access key")
	f.DurationVar(&o.rescheduleAfter, "reschedule-after", 15*time.Minute, "move environments off a runner INACTIVE this long (from their last backup), and finish deleting theirs; 0: never")
}

// storage is the backup storage the options describe (nil: disabled).
func (o serverBackupOptions) storage(dataDir string) (*covev1.BackupStorage, error) {
	envSecret := takeEnv(envBackupS3Secret)
	if !o.enabled {
		return nil, nil
	}
	s3 := o.s3Bucket != "" || o.s3Endpoint != "" || o.s3AccessKeyID != "" || o.s3SecretFile != ""
	if s3 && o.dir != "" {
		return nil, errors.New("--backup-dir and --backup-s3-* are alternatives: give one")
	}
	if !s3 {
		dir := o.dir
		if dir == "" {
			dir = filepath.Join(dataDir, "backups")
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, fmt.Errorf("--backup-dir: %w", err)
		}
		return &covev1.BackupStorage{Kind: "dir", Dir: abs}, nil
	}
	if o.s3Bucket == "" {
		return nil, errors.New("--backup-s3-bucket is required for S3 backup storage")
	}
	secret := envSecret
	if o.s3SecretFile != "" {
		b, err := os.ReadFile(o.s3SecretFile)
		if err != nil {
			return nil, fmt.Errorf("--backup-s3-secret-access-key-file: %w", err)
		}
		secret = strings.TrimSpace(string(b))
	}
	if (o.s3AccessKeyID == "") != (secret == "") {
		return nil, fmt.Errorf("S3 credentials: give --backup-s3-access-key-id and the secret (--backup-s3-secret-access-key-file or $%s) together, or neither", envBackupS3Secret)
	}
	return &covev1.BackupStorage{Kind: "s3", Endpoint: o.s3Endpoint, Region: o.s3Region, Bucket: o.s3Bucket, Prefix: o.s3Prefix,
		PathStyle: o.s3PathStyle, AccessKeyId: o.s3AccessKeyID, SecretAccessKey: secret}, nil
}

// takeEnv returns the variable's value and removes it from the process
// environment (review REV-8): the server shares its process with the runner
// in `cove up` and the daemon, and every child that inherits the
// environment — buildkitd running hostile Dockerfiles, runc, the unpack
// and backup children — would otherwise carry the secret in
// /proc/<pid>/environ.
func takeEnv(name string) string {
	v := os.Getenv(name)
	os.Unsetenv(name)
	return v
}

// apply opens and checks the storage and puts it in cfg.
func (o serverBackupOptions) apply(ctx context.Context, dataDir string, log *slog.Logger, cfg *server.Config) error {
	cfg.RescheduleAfter = o.rescheduleAfter
	st, err := o.storage(dataDir)
	if err != nil || st == nil {
		if err == nil {
			log.Warn("backups are disabled (--backups=false): environments live only on their runner's disk")
		}
		return err
	}
	bs, err := server.OpenBackupStorage(ctx, st, log.With("component", "backup-storage"))
	if err != nil {
		return err
	}
	cfg.BackupStorage, cfg.BackupStore = st, bs
	where := st.Dir
	if st.Kind == "s3" {
		where = "s3://" + st.Bucket + "/" + st.Prefix
	}
	log.Info("backups", "storage", st.Kind, "at", where)
	return nil
}
