package netenv

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/dns/dnsmessage"
)

// dnsLab is a network namespace the test creates, holding the relay on
// 10.77.0.1:53, an upstream resolver on 10.77.0.53:53 and two source
// addresses standing for two environments: an attacker and a victim.
type dnsLab struct {
	t                *testing.T
	ns               string
	relay            *relay
	attacker, victim netip.Addr
	slowSeen         atomic.Int32  // "slow.test." queries the upstream got
	slowCh           chan struct{} // one tick per slow query
}

const (
	labRelay    = "10.77.0.1"
	labUpstream = "10.77.0.53:53"
	slowName    = "slow.test."
)

// newDNSLab starts the relay with lim. The upstream answers every name
// except slowName, whose queries it keeps unanswered.
func newDNSLab(t *testing.T, lim dnsLimits) *dnsLab {
	t.Helper()
	requireRoot(t)
	l := &dnsLab{t: t, ns: newNS(t, filepath.Join(t.TempDir(), "dns")), slowCh: make(chan struct{}, 1<<16),
		attacker: netip.MustParseAddr("10.77.0.2"), victim: netip.MustParseAddr("10.77.0.3")}
	h := nlAt(t, l.ns)
	linkUp(t, h, "lo")
	la := netlink.NewLinkAttrs()
	la.Name = "dns0"
	must(t, h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "dns1"}))
	linkUp(t, h, "dns1")
	link := linkUp(t, h, "dns0")
	for _, a := range []string{labRelay, "10.77.0.2", "10.77.0.3", "10.77.0.53"} {
		addAddr(t, h, link, a+"/24")
	}

	var ul net.PacketConn
	var tl net.Listener
	must(t, in(t, l.ns, func() (err error) {
		if ul, err = net.ListenPacket("udp4", labUpstream); err != nil {
			return err
		}
		tl, err = net.Listen("tcp4", labUpstream)
		return err
	}))
	t.Cleanup(func() { ul.Close(); tl.Close() })
	go l.upstreamUDP(ul)
	go serveDNSTCP(tl)

	ns, err := netns.GetFromPath(l.ns)
	must(t, err)
	defer ns.Close()
	l.relay, err = startRelayWith(context.Background(), slog.New(slog.DiscardHandler), ns, netip.MustParseAddr(labRelay), []string{labUpstream}, lim)
	must(t, err)
	t.Cleanup(l.relay.close)
	return l
}

func (l *dnsLab) upstreamUDP(c net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		var q dnsmessage.Message
		if q.Unpack(buf[:n]) == nil && len(q.Questions) == 1 && q.Questions[0].Name.String() == slowName {
			l.slowSeen.Add(1)
			l.slowCh <- struct{}{}
			continue
		}
		if b := dnsReply(buf[:n]); b != nil {
			c.WriteTo(b, from)
		}
	}
}

// dial connects from src to the relay, inside the lab's namespace.
func (l *dnsLab) dial(network string, src netip.Addr) (net.Conn, error) {
	var c net.Conn
	err := in(l.t, l.ns, func() (err error) {
		d := net.Dialer{Timeout: testutil.Patience(l.t)}
		if network == "tcp" {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		} else {
			d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
		c, err = d.Dial(network+"4", labRelay+":53")
		return err
	})
	return c, err
}

func query(t *testing.T, id uint16, name string) []byte {
	t.Helper()
	q := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	b, err := q.Pack()
	must(t, err)
	return b
}

// resolve asks the relay for name from src as a resolver would: UDP with a
// few retries, or one TCP connection. It returns nil when answered.
func (l *dnsLab) resolve(network string, src netip.Addr, name string) error {
	l.t.Helper()
	c, err := l.dial(network, src)
	if err != nil {
		return err
	}
	defer c.Close()
	q := query(l.t, 4242, name)
	var resp []byte
	if network == "tcp" {
		c.SetDeadline(time.Now().Add(testutil.Patience(l.t)))
		if err := writeTCPMsg(c, q); err != nil {
			return err
		}
		if resp, err = readTCPMsg(c); err != nil {
			return err
		}
	} else {
		buf := make([]byte, 1500)
		n, err := exchange(c, q, buf, testutil.Patience(l.t))
		if err != nil {
			return err
		}
		resp = buf[:n]
	}
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil || m.ID != 4242 || len(m.Answers) == 0 {
		return errors.New("bad reply")
	}
	return nil
}

func (l *dnsLab) held(b *budget, src netip.Addr) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held[src]
}

// F9: one environment opens more idle TCP connections than the relay
// holds in total and floods it with UDP queries its upstream never
// answers; another environment's queries are still answered, over UDP and
// TCP, and the attacker holds no more than its own share.
func TestDNSRelayPerSourceBudgets(t *testing.T) {
	lim := defaultDNSLimits
	// Held slots stay held for the whole test: only the budgets protect
	// the victim, not a timeout that happens to expire.
	lim.upstreamTimeout, lim.tcpIdle = 5*time.Minute, 5*time.Minute
	l := newDNSLab(t, lim)

	// Idle TCP connections, more than the relay's total.
	for i := 0; i <= lim.tcpTotal; i++ {
		c, err := l.dial("tcp", l.attacker)
		if err != nil {
			t.Fatalf("attacker connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
	}
	for _, network := range []string{"tcp", "udp"} {
		if err := l.resolve(network, l.victim, dnsName); err != nil {
			t.Fatalf("victim over %s while the attacker holds idle TCP connections: %v", network, err)
		}
	}
	// The victim's connection was accepted after all of the attacker's.
	if got := l.held(l.relay.tcpBudget, l.attacker); got != lim.tcpPerSource {
		t.Errorf("attacker holds %d TCP connections, want its share %d", got, lim.tcpPerSource)
	}

	// UDP queries that are never answered, more than the relay's total.
	flood, err := l.dial("udp", l.attacker)
	must(t, err)
	defer flood.Close()
	for i := 0; i <= lim.udpTotal; i++ {
		if _, err := flood.Write(query(t, uint16(i), slowName)); err != nil {
			t.Fatal(err)
		}
	}
	// The attack is in place once the upstream holds the attacker's share.
	timeout := time.After(time.Minute)
	for i := 0; i < lim.udpPerSource; i++ {
		select {
		case <-l.slowCh:
		case <-timeout:
			t.Fatalf("upstream got %d of the attacker's queries, want %d", l.slowSeen.Load(), lim.udpPerSource)
		}
	}
	for _, network := range []string{"udp", "tcp"} {
		if err := l.resolve(network, l.victim, dnsName); err != nil {
			t.Fatalf("victim over %s during the UDP flood: %v", network, err)
		}
	}
	if got := l.slowSeen.Load(); got != int32(lim.udpPerSource) {
		t.Errorf("upstream got %d of the attacker's queries, want at most its share %d", got, lim.udpPerSource)
	}
	if got := l.held(l.relay.udpBudget, l.attacker); got != lim.udpPerSource {
		t.Errorf("attacker holds %d UDP slots, want %d", got, lim.udpPerSource)
	}
}

// A TCP client that sends nothing, or only part of a query, loses its
// connection after tcpIdle, and its slot is free again.
func TestDNSRelayClosesIdleTCP(t *testing.T) {
	lim := defaultDNSLimits
	lim.tcpIdle = 500 * time.Millisecond
	lim.tcpPerSource = 1
	l := newDNSLab(t, lim)

	for _, first := range [][]byte{nil, {0}} { // silent; one byte of the length
		c, err := l.dial("tcp", l.victim)
		must(t, err)
		if first != nil {
			_, err = c.Write(first)
			must(t, err)
		}
		c.SetReadDeadline(time.Now().Add(time.Minute))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("idle connection (sent %v) not closed by the relay", first)
		}
		if err == nil {
			t.Fatalf("idle connection (sent %v): the relay sent data", first)
		}
		// Its only slot was given back before the close: a query works.
		if err := l.resolve("tcp", l.victim, dnsName); err != nil {
			t.Fatalf("after the idle connection was closed: %v", err)
		}
	}
}
