package sshgw

import (
	"context"
	"net"

	"github.com/covedev/cove/internal/connlimit"
)

// Defaults for the cap on connections that have not finished
// authentication (OpenSSH's MaxStartups). Authenticated sessions do not
// count. The grace time (OpenSSH's LoginGraceTime) is HandshakeTimeout:
// from the TCP accept to the end of authentication, every read and write
// has that deadline, so a client that stalls anywhere before it is
// authenticated (the key exchange, or the signature) is cut off.
const (
	DefaultMaxStartups          = 64
	DefaultMaxStartupsPerSource = 10
)

// startupLimiter returns the limiter for cfg's caps (defaults for zero,
// none for negative).
func startupLimiter(cfg Config) *connlimit.Limiter {
	total, per := cfg.MaxStartups, cfg.MaxStartupsPerSource
	if total == 0 {
		total = DefaultMaxStartups
	}
	if per == 0 {
		per = DefaultMaxStartupsPerSource
	}
	return connlimit.New(total, per)
}

// limitStartups wraps the gateway's listener: a connection beyond the caps
// is closed at once, before the SSH version exchange.
func (g *Gateway) limitStartups(ln net.Listener) net.Listener {
	return connlimit.Listen(ln, g.startups, g.log, "ssh gateway: too many unauthenticated connections, refusing new ones")
}

// authenticated frees c's startup slot: its user has authenticated.
func authenticated(c net.Conn) { connlimit.Authenticated(c) }

// Startups reports the connections that have not finished authentication
// and how many were refused for the caps.
func (g *Gateway) Startups() connlimit.Stats { return g.startups.Stats() }

// WaitStartups blocks until cond holds for the startup counts or ctx ends
// (for tests and diagnostics).
func (g *Gateway) WaitStartups(ctx context.Context, cond func(connlimit.Stats) bool) error {
	return g.startups.Wait(ctx, cond)
}
