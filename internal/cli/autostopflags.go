package cli

import (
	"time"

	"github.com/covedev/cove/internal/server"
	"github.com/spf13/pflag"
)

// autoStopServerOptions are the server's auto-stop defaults
// (docs/autostop.md): the timeouts of environments created without any.
type autoStopServerOptions struct {
	inactivity, lifetime time.Duration
}

func addAutoStopServerFlags(f *pflag.FlagSet, o *autoStopServerOptions) {
	f.DurationVar(&o.inactivity, "default-inactivity-timeout", server.DefaultInactivityTimeout, "stop environments created without timeouts after this long without activity (0: never; a class's maxInactivity caps it)")
	f.DurationVar(&o.lifetime, "default-max-lifetime", 0, "stop environments created without timeouts after running this long, whatever their activity (0: never; a class's maxLifetime caps it)")
}

func (o autoStopServerOptions) apply(cfg *server.Config) {
	cfg.DefaultInactivity = o.inactivity
	if o.inactivity <= 0 {
		cfg.DefaultInactivity = -1 // never
	}
	cfg.DefaultMaxLifetime = max(o.lifetime, 0)
}
