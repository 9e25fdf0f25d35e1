package cli

import (
	"log/slog"
	"math"
	"os"
	"time"

	"github.com/covedev/cove/internal/runner"
	"github.com/spf13/cobra"
)

// BackupChildCommand is the hidden `cove internal-backup`: the runner's
// backup and restore child (runner.BackupChild). It reads its job (the
// organization's key among it) on stdin, never from its command line,
// and writes JSON lines on stdout. The runner starts it in a limited work
// cgroup of its own (--backup-*), so that a backup never takes the host
// from the environments.
func BackupChildCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "internal-backup",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			return runner.BackupChild(cmd.Context(), os.Stdin, cmd.OutOrStdout(), log)
		},
	}
}

// backupOptions are the runner's --backup-* flags.
type backupOptions struct {
	cpus      float64
	limits    runner.WorkLimits
	interval  time.Duration
	freezeMax time.Duration
	// salvageWarnAfter: --salvage-warn-after (step_salvage.go).
	salvageWarnAfter time.Duration
}

// addBackupFlags adds the --backup-* flags (runnercmd.go).
func addBackupFlags(cmd *cobra.Command, o *backupOptions) {
	f := cmd.Flags()
	f.Float64Var(&o.cpus, "backup-cpus", 1, "CPUs backups and restores (walking, chunking, compressing, encrypting and uploading, in a child process of the runner) may use, all together (0: no limit)")
	f.Int64Var(&o.limits.MemoryBytes, "backup-memory", 512<<20, "memory limit (bytes) of backups and restores together, page cache of what they read and write included (0: no limit)")
	f.Uint64Var(&o.limits.ReadBPS, "backup-io-read-bps", 100<<20, "read limit of backups and restores on the data dir's disk, bytes/s (0: none)")
	f.Uint64Var(&o.limits.WriteBPS, "backup-io-write-bps", 100<<20, "write limit of backups and restores on the data dir's disk (restores write; a dir storage on that disk too), bytes/s (0: none)")
	f.DurationVar(&o.interval, "backup-interval", 10*time.Minute, "back up each running environment this often, skipped when nothing changed (0: only on stop and on demand)")
	f.DurationVar(&o.freezeMax, "backup-freeze-max", 30*time.Second, "longest a running environment is frozen for a backup's walk; past it, it is thawed and the backup finishes from a view that may not be consistent (reported)")
	f.DurationVar(&o.salvageWarnAfter, "salvage-warn-after", 7*24*time.Hour, "a copy of an environment that moved on, whose last backup (salvage) keeps failing, is kept and tried again for as long as it takes; past this long, every failure is logged as an error asking the operator to act (the copy is never deleted unsaved)")
}

// backupConfig is the runner's backup configuration from the flags.
func backupConfig(o backupOptions) runner.BackupConfig {
	l := o.limits
	l.CPUMillis = int64(math.Round(max(o.cpus, 0) * 1000))
	l.MemoryBytes = max(l.MemoryBytes, 0)
	return runner.BackupConfig{Limits: &l, Interval: max(o.interval, 0), FreezeMax: o.freezeMax, SalvageWarnAfter: o.salvageWarnAfter}
}
