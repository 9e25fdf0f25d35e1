package netenv

import (
	"net/netip"
	"sync"
	"time"
)

// dnsLimits bound the DNS relay's work.
type dnsLimits struct {
	// upstreamTimeout bounds each upstream attempt (and writing a TCP
	// reply back).
	upstreamTimeout time.Duration
	// tcpIdle is how long a TCP client has to send each whole query, the
	// first one included; then the relay closes the connection.
	tcpIdle time.Duration
	// Per source address (one environment, or the builder) and in total:
	// UDP queries in flight, and open TCP connections. Over its share, a
	// source's UDP queries are dropped (resolvers retry) and its new TCP
	// connections closed; other sources are not affected. The totals only
	// bound the relay's memory and file descriptors.
	udpPerSource, udpTotal int
	tcpPerSource, tcpTotal int
}

// defaultDNSLimits: a resolver sends a few queries at a time (A and AAAA
// for a couple of names) and rarely uses TCP, so 64 UDP queries in flight
// and 16 connections per environment leave room for parallel builds and
// package managers. An unanswered query holds a slot for at most
// 2 s × upstreams; an idle TCP client for 3 s.
var defaultDNSLimits = dnsLimits{
	upstreamTimeout: 2 * time.Second,
	tcpIdle:         3 * time.Second,
	udpPerSource:    64,
	udpTotal:        4096,
	tcpPerSource:    16,
	tcpTotal:        1024,
}

// budget counts what each source address holds. A source address stands
// for one environment: an environment cannot send from another address,
// since its network namespace belongs to the host's user namespace (no
// CAP_NET_ADMIN or CAP_NET_RAW there to add addresses or craft packets).
type budget struct {
	perSource, total int

	mu   sync.Mutex
	held map[netip.Addr]int
	sum  int
}

func newBudget(perSource, total int) *budget {
	return &budget{perSource: perSource, total: total, held: map[netip.Addr]int{}}
}

// take reserves one unit for src, unless src holds its share already or the
// relay is at its total.
func (b *budget) take(src netip.Addr) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held[src] >= b.perSource || b.sum >= b.total {
		return false
	}
	b.held[src]++
	b.sum++
	return true
}

func (b *budget) release(src netip.Addr) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held[src]--; b.held[src] <= 0 {
		delete(b.held, src)
	}
	b.sum--
}
