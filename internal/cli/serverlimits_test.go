package cli

import (
	"testing"

	"github.com/covedev/cove/internal/server"
	"github.com/spf13/pflag"
)

// TestServerLimitFlags: the defaults are the server's, 0 means unlimited,
// and the values reach the server's configuration.
func TestServerLimitFlags(t *testing.T) {
	var o serverLimitOptions
	f := pflag.NewFlagSet("server", pflag.ContinueOnError)
	addServerLimitFlags(f, &o)
	var cfg server.Config
	o.apply(&cfg)
	if cfg.Limits != server.DefaultLimits() || cfg.MaxRunnerEnvironments != server.DefaultMaxRunnerEnvironments || cfg.AllowPrivateImages {
		t.Fatalf("defaults: %+v", cfg)
	}
	if err := f.Parse([]string{"--max-running-per-user", "0", "--max-watches-per-user", "3", "--max-runner-environments", "8", "--allow-private-images"}); err != nil {
		t.Fatal(err)
	}
	o.apply(&cfg)
	if cfg.Limits.RunningPerUser != 0 || cfg.Limits.WatchesPerUser != 3 || cfg.MaxRunnerEnvironments != 8 || !cfg.AllowPrivateImages {
		t.Fatalf("parsed: %+v", cfg)
	}
}
