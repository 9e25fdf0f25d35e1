package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/server"
	"github.com/spf13/pflag"
)

// TestBackupGCFlags: the defaults are the server's, the values reach its
// configuration, and a bad value is refused naming the flag.
func TestBackupGCFlags(t *testing.T) {
	parse := func(args ...string) (server.BackupGCConfig, error) {
		var o backupGCOptions
		f := pflag.NewFlagSet("server", pflag.ContinueOnError)
		addBackupGCFlags(f, &o)
		if err := f.Parse(args); err != nil {
			t.Fatal(err)
		}
		return o.config()
	}
	cfg, err := parse()
	if err != nil || cfg != server.DefaultBackupGCConfig() {
		t.Fatalf("defaults: %+v, %v", cfg, err)
	}
	cfg, err = parse("--backup-gc-interval", "0", "--backup-keep-last", "3", "--backup-keep-hourly", "6", "--backup-keep-daily", "30", "--backup-deleted-grace", "48h", "--backup-gc-grace", "2h")
	if err != nil || cfg.Interval != 0 || cfg.Grace != 2*time.Hour || cfg.Policy.KeepLast != 3 || cfg.Policy.HourlyFor != 6*time.Hour ||
		cfg.Policy.DailyFor != 30*24*time.Hour || cfg.Policy.DeletedGrace != 48*time.Hour {
		t.Fatalf("parsed: %+v, %v", cfg, err)
	}
	for _, bad := range [][]string{{"--backup-keep-last", "0"}, {"--backup-gc-grace", "0"}, {"--backup-gc-interval", "-1h"}, {"--backup-keep-daily", "-1"}} {
		if _, err := parse(bad...); err == nil || !strings.Contains(err.Error(), "--backup-") {
			t.Errorf("%v: %v", bad, err)
		}
	}
}
