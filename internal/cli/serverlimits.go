package cli

import (
	"github.com/covedev/cove/internal/server"
	"github.com/spf13/pflag"
)

// serverLimitOptions bound what one user, and one runner, may claim on the
// server.
type serverLimitOptions struct {
	limits                server.Limits
	maxRunnerEnvironments int
	allowPrivateImages    bool
}

func addServerLimitFlags(f *pflag.FlagSet, o *serverLimitOptions) {
	def := server.DefaultLimits()
	f.IntVar(&o.limits.RunningPerUser, "max-running-per-user", def.RunningPerUser, "environments one user may have running or starting (0: unlimited)")
	f.IntVar(&o.limits.EnvironmentsPerUser, "max-environments-per-user", def.EnvironmentsPerUser, "environments one user may have in any phase but deleted (0: unlimited)")
	f.IntVar(&o.limits.WatchesPerUser, "max-watches-per-user", def.WatchesPerUser, "open environment watch streams per user (0: unlimited)")
	f.IntVar(&o.limits.TokensPerUser, "max-tokens-per-user", def.TokensPerUser, "unexpired personal access tokens per user (0: unlimited)")
	f.IntVar(&o.maxRunnerEnvironments, "max-runner-environments", server.DefaultMaxRunnerEnvironments, "the most environments a runner may offer to run (its --max-environments)")
	f.BoolVar(&o.allowPrivateImages, "allow-private-images", false, "let members name images on loopback, private or link-local registries (owners always may)")
}

func (o serverLimitOptions) apply(cfg *server.Config) {
	cfg.Limits = o.limits
	cfg.MaxRunnerEnvironments = o.maxRunnerEnvironments
	cfg.AllowPrivateImages = o.allowPrivateImages
}
