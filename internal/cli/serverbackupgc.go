package cli

import (
	"fmt"
	"time"

	"github.com/covedev/cove/internal/backupgc"
	"github.com/covedev/cove/internal/server"
	"github.com/spf13/pflag"
)

// backupGCOptions are the server's backup retention and garbage
// collection settings.
type backupGCOptions struct {
	interval, grace, deletedGrace time.Duration
	keepLast, keepHours, keepDays int
}

func addBackupGCFlags(f *pflag.FlagSet, o *backupGCOptions) {
	def := server.DefaultBackupGCConfig()
	f.DurationVar(&o.interval, "backup-gc-interval", def.Interval, "apply the backup retention policy and delete unreferenced chunks this often (0: never)")
	f.DurationVar(&o.grace, "backup-gc-grace", def.Grace, "delete an unreferenced chunk only once it is this old, and this long after it was found unreferenced")
	f.IntVar(&o.keepLast, "backup-keep-last", def.Policy.KeepLast, "keep each environment's last N backups")
	f.IntVar(&o.keepHours, "backup-keep-hourly", int(def.Policy.HourlyFor/time.Hour), "keep the newest backup of each hour for this many hours")
	f.IntVar(&o.keepDays, "backup-keep-daily", int(def.Policy.DailyFor/(24*time.Hour)), "keep the newest backup of each day (UTC) for this many days")
	f.DurationVar(&o.deletedGrace, "backup-deleted-grace", def.Policy.DeletedGrace, "delete a deleted environment's backups this long after its deletion")
}

// config checks the options and returns the server's configuration.
func (o backupGCOptions) config() (server.BackupGCConfig, error) {
	cfg := server.BackupGCConfig{Interval: o.interval, Grace: o.grace, StaleUploads: server.DefaultStaleUploads, Policy: backupgc.Policy{
		KeepLast:     o.keepLast,
		HourlyFor:    time.Duration(o.keepHours) * time.Hour,
		DailyFor:     time.Duration(o.keepDays) * 24 * time.Hour,
		DeletedGrace: o.deletedGrace,
	}}
	switch {
	case o.interval < 0:
		return cfg, fmt.Errorf("--backup-gc-interval %v: must be 0 (never) or positive", o.interval)
	case o.grace <= 0:
		return cfg, fmt.Errorf("--backup-gc-grace %v: must be positive (default %v)", o.grace, backupgc.DefaultGrace)
	case o.keepLast < 1:
		return cfg, fmt.Errorf("--backup-keep-last %d: at least 1 (the newest backup is always kept)", o.keepLast)
	case o.keepHours < 0 || o.keepDays < 0 || o.deletedGrace < 0:
		return cfg, fmt.Errorf("--backup-keep-hourly, --backup-keep-daily and --backup-deleted-grace must not be negative")
	}
	return cfg, cfg.Policy.Validate()
}
