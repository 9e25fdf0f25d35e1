// Package connlimit caps the connections that have not authenticated yet,
// in total and per source address, like OpenSSH's MaxStartups: an
// unauthenticated client can hold only a bounded share of a server's
// connections, file descriptors and goroutines, and connections that did
// authenticate are not counted, so a flood never locks out users who
// already got in. The SSH gateway and the HTTP port proxy use it.
package connlimit

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Stats is a limiter's state.
type Stats struct {
	// Pending is the number of connections holding a slot now.
	Pending int
	// Refused counts the connections refused since the limiter was made.
	Refused uint64
}

// Limiter counts pending (not yet authenticated) connections.
type Limiter struct {
	max, perSource int

	mu        sync.Mutex
	pending   int
	bySource  map[netip.Prefix]int
	refused   uint64
	changed   chan struct{} // closed and replaced on every change
	lastLog   time.Time
	unlogged  uint64
	logPeriod time.Duration
}

// New returns a limiter allowing max pending connections in all and
// perSource from one source (an IPv4 address or an IPv6 /64). A value
// of zero or less means no cap of that kind.
func New(max, perSource int) *Limiter {
	return &Limiter{max: max, perSource: perSource, bySource: map[netip.Prefix]int{},
		changed: make(chan struct{}), logPeriod: time.Minute}
}

// Source is the key connections from addr are counted under: the IPv4
// address, or the /64 of an IPv6 address (one host usually holds a whole
// /64). Addresses that are not IP (unix sockets) share one key.
func Source(addr net.Addr) netip.Prefix {
	var ip netip.Addr
	if ta, ok := addr.(*net.TCPAddr); ok {
		ip, _ = netip.AddrFromSlice(ta.IP)
	} else if addr != nil {
		if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
			ip = ap.Addr()
		}
	}
	ip = ip.Unmap()
	switch {
	case ip.Is4():
		return netip.PrefixFrom(ip, 32)
	case ip.Is6():
		p, _ := ip.Prefix(64)
		return p
	}
	return netip.Prefix{}
}

// Acquire takes a slot for a new connection from addr. It returns false,
// and counts a refusal, when a cap is reached; otherwise release gives the
// slot back (calling it again does nothing).
func (l *Limiter) Acquire(addr net.Addr) (release func(), ok bool) {
	src := Source(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.max > 0 && l.pending >= l.max) || (l.perSource > 0 && l.bySource[src] >= l.perSource) {
		l.refused++
		l.unlogged++
		l.notify()
		return nil, false
	}
	l.pending++
	l.bySource[src]++
	l.notify()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.pending--
			if l.bySource[src]--; l.bySource[src] <= 0 {
				delete(l.bySource, src)
			}
			l.notify()
		})
	}, true
}

// notify wakes Wait callers; l.mu is held.
func (l *Limiter) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// Stats returns the limiter's state.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Pending: l.pending, Refused: l.refused}
}

// Wait blocks until cond holds for the limiter's state, or ctx ends.
func (l *Limiter) Wait(ctx context.Context, cond func(Stats) bool) error {
	for {
		l.mu.Lock()
		st, ch := Stats{Pending: l.pending, Refused: l.refused}, l.changed
		l.mu.Unlock()
		if cond(st) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// LogRefusal logs a refused connection at most once a minute (with the
// number refused since the last line), so a flood does not flood the log.
func (l *Limiter) LogRefusal(log *slog.Logger, msg string, addr net.Addr) {
	l.mu.Lock()
	now := time.Now()
	if !l.lastLog.IsZero() && now.Sub(l.lastLog) < l.logPeriod {
		l.mu.Unlock()
		return
	}
	n := l.unlogged
	l.unlogged = 0
	l.lastLog = now
	l.mu.Unlock()
	log.Warn(msg, "remote", addr.String(), "refused", n, "max", l.max, "max_per_source", l.perSource)
}

// Listen wraps ln so that each accepted connection takes a slot of l: a
// connection beyond the caps is closed as soon as it is accepted, before
// anything is read from it or written to it; the others hold their slot
// until Authenticated is called on them or they are closed. Refusals are
// logged through log (at most once a minute) with msg.
func Listen(ln net.Listener, l *Limiter, log *slog.Logger, msg string) net.Listener {
	return &listener{Listener: ln, l: l, log: log, msg: msg}
}

type listener struct {
	net.Listener
	l   *Limiter
	log *slog.Logger
	msg string
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, ok := ln.l.Acquire(c.RemoteAddr())
		if ok {
			return &Conn{Conn: c, release: release}, nil
		}
		ln.l.LogRefusal(ln.log, ln.msg, c.RemoteAddr())
		c.Close()
	}
}

// Conn is a connection that holds a slot of a Limiter until it is
// authenticated or closed.
type Conn struct {
	net.Conn
	release func()
}

// Close closes the connection and gives its slot back.
func (c *Conn) Close() error {
	c.release()
	return c.Conn.Close()
}

// Authenticated gives c's slot back, if c (or a connection c wraps, such
// as the one under a *tls.Conn) came from Listen; the connection stays
// open. Call it once the peer has proved who it is.
func Authenticated(c net.Conn) {
	for c != nil {
		if lc, ok := c.(*Conn); ok {
			lc.release()
			return
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return
		}
		c = u.NetConn()
	}
}
