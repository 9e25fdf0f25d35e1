package portproxy

import (
	"cmp"
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/covedev/cove/internal/connlimit"
)

// Limits bound what clients that have not been authorized can hold on the
// proxy. Zero values take the defaults below.
type Limits struct {
	// MaxPending caps connections that have not yet carried a request the
	// proxy let through (to any port, public ones included), in all and
	// from one source (IPv4 address or IPv6 /64). A connection beyond
	// either cap is closed as soon as it is accepted. Negative: no cap.
	MaxPending, MaxPendingPerSource int
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle for this long.
	IdleTimeout time.Duration
}

// Defaults of Limits.
const (
	DefaultMaxPending          = 512
	DefaultMaxPendingPerSource = 64
	DefaultReadHeaderTimeout   = 10 * time.Second
	DefaultIdleTimeout         = 2 * time.Minute
	// maxStreams caps concurrent HTTP/2 requests on one connection (over
	// TLS), so one connection cannot carry hundreds of pending requests.
	maxStreams = 100
)

type connKey struct{}

// NewServer returns the HTTP server for the proxy handler h on ln, and the
// listener to serve (ln wrapped with the connection caps). Request bodies
// and responses are not time-limited: uploads, long polls and WebSockets
// through the proxy are the applications' business.
func NewServer(h http.Handler, ln net.Listener, lim Limits, log *slog.Logger) (*http.Server, net.Listener) {
	if log == nil {
		log = slog.Default()
	}
	total := cmp.Or(lim.MaxPending, DefaultMaxPending)
	per := cmp.Or(lim.MaxPendingPerSource, DefaultMaxPendingPerSource)
	l := connlimit.New(total, per)
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cmp.Or(lim.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		IdleTimeout:       cmp.Or(lim.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    256 << 10,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: maxStreams},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return hs, connlimit.Listen(ln, l, log, "port proxy: too many connections without an authorized request, refusing new ones")
}

// authenticatedConn frees the connection's pending slot once a request on
// it was let through.
func authenticatedConn(ctx context.Context) {
	if c, ok := ctx.Value(connKey{}).(net.Conn); ok {
		connlimit.Authenticated(c)
	}
}
