package netenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// blockedTimeout is how long a probe that must fail waits for an answer (a
// dropped packet gets none). A probe that must succeed waits up to
// testutil.Patience, sending datagrams again every resendEvery meanwhile.
const (
	blockedTimeout = 700 * time.Millisecond
	resendEvery    = 500 * time.Millisecond
)

const (
	outsideIP  = "198.51.100.2"
	hostOutIP  = "198.51.100.1"
	privateIP  = "10.99.0.2"
	metadataIP = "169.254.169.254"
	dnsName    = "outside.test."
)

var dnsAnswer = [4]byte{198, 51, 100, 99}

func requireRoot(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "network namespaces, nftables")
}

// newNS creates a bind-mounted network namespace removed at cleanup.
func newNS(t *testing.T, path string) string {
	t.Helper()
	if err := ensureNetNSFile(path); err != nil {
		t.Skipf("cannot create network namespaces here: %v", err)
	}
	t.Cleanup(func() { removeNetNSFile(path) })
	return path
}

// in runs fn inside the namespace at path.
func in(t *testing.T, path string, fn func() error) error {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer ns.Close()
	return inNS(ns, fn)
}

func nlAt(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func addAddr(t *testing.T, h *netlink.Handle, l netlink.Link, cidr string) {
	t.Helper()
	must(t, h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(cidr))}))
}

func linkUp(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	must(t, err)
	must(t, h.LinkSetUp(l))
	return l
}

// tcpProbe connects from namespace ns, trying for up to timeout, and
// returns what the server sends.
func tcpProbe(t *testing.T, ns, addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	err := in(t, ns, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testutil.Patience(t)))
	b, err := io.ReadAll(c)
	return strings.TrimSpace(string(b)), err
}

// udpProbe sends a datagram from namespace ns, again every resendEvery,
// and returns the first reply within timeout.
func udpProbe(t *testing.T, ns, addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	if err := in(t, ns, func() (err error) {
		c, err = net.Dial("udp4", addr)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 512)
	n, err := exchange(c, []byte("ping"), buf, timeout)
	return strings.TrimSpace(string(buf[:n])), err
}

// exchange writes msg to the datagram connection c, again every
// resendEvery (a datagram may be lost), and reads the first reply into buf
// within timeout.
func exchange(c net.Conn, msg, buf []byte, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := c.Write(msg); err != nil {
			return 0, err
		}
		c.SetReadDeadline(earlier(deadline, time.Now().Add(resendEvery)))
		n, err := c.Read(buf)
		var ne net.Error
		if err == nil || !errors.As(err, &ne) || !ne.Timeout() || time.Now().After(deadline) {
			return n, err
		}
	}
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// ping sends ICMP echoes from namespace ns (again every resendEvery) and
// waits up to timeout for a reply.
func ping(t *testing.T, ns, dst string, timeout time.Duration) error {
	var pc *icmp.PacketConn
	if err := in(t, ns, func() (err error) {
		pc, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return err
	}
	defer pc.Close()
	id := os.Getpid() & 0xffff
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("cove")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	var resend time.Time
	buf := make([]byte, 1500)
	for {
		if time.Now().After(resend) {
			if _, err := pc.WriteTo(b, &net.IPAddr{IP: net.ParseIP(dst)}); err != nil {
				return err
			}
			resend = time.Now().Add(resendEvery)
			pc.SetReadDeadline(earlier(deadline, resend))
		}
		n, peer, err := pc.ReadFrom(buf)
		var ne net.Error
		if err != nil && errors.As(err, &ne) && ne.Timeout() && time.Now().Before(deadline) {
			continue // send again
		}
		if err != nil {
			return err
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply || peer.String() != dst {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id {
			return nil
		}
	}
}

// dnsQuery resolves name's A record via server from namespace ns.
func dnsQuery(t *testing.T, ns, network, server, name string) (netip.Addr, error) {
	q := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 4242, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	b, err := q.Pack()
	if err != nil {
		return netip.Addr{}, err
	}
	var c net.Conn
	if err := in(t, ns, func() (err error) {
		c, err = net.DialTimeout(network, server, testutil.Patience(t))
		return err
	}); err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testutil.Patience(t)))
	var resp []byte
	if network == "tcp" {
		if err := writeTCPMsg(c, b); err != nil {
			return netip.Addr{}, err
		}
		if resp, err = readTCPMsg(c); err != nil {
			return netip.Addr{}, err
		}
	} else {
		buf := make([]byte, 1500)
		n, err := exchange(c, b, buf, testutil.Patience(t))
		if err != nil {
			return netip.Addr{}, err
		}
		resp = buf[:n]
	}
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		return netip.Addr{}, err
	}
	if m.ID != 4242 {
		return netip.Addr{}, fmt.Errorf("reply id %d", m.ID)
	}
	for _, a := range m.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			return netip.AddrFrom4(r.A), nil
		}
	}
	return netip.Addr{}, errors.New("no A record in reply")
}

// serveTCP accepts on l; each connection receives the client's address
// (what the server sees) and is closed. Echo mode echoes lines instead.
func serveTCP(l net.Listener, echo bool) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if !echo {
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				fmt.Fprintln(c, host)
				return
			}
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				c.Write([]byte(line))
			}
		}()
	}
}

// serveUDP answers each datagram with the sender's address.
func serveUDP(c net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		_, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		host, _, _ := net.SplitHostPort(from.String())
		c.WriteTo([]byte(host+"\n"), from)
	}
}

// serveDNS answers every A question with dnsAnswer.
func serveDNS(c net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		if b := dnsReply(buf[:n]); b != nil {
			c.WriteTo(b, from)
		}
	}
}

// serveDNSTCP is serveDNS over TCP.
func serveDNSTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(testutil.MaxWait))
			for {
				q, err := readTCPMsg(c)
				if err != nil {
					return
				}
				b := dnsReply(q)
				if b == nil || writeTCPMsg(c, b) != nil {
					return
				}
			}
		}()
	}
}

func dnsReply(msg []byte) []byte {
	var q dnsmessage.Message
	if q.Unpack(msg) != nil || len(q.Questions) != 1 {
		return nil
	}
	resp := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: q.ID, Response: true, Authoritative: true},
		Questions: q.Questions,
		Answers: []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: q.Questions[0].Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
			Body:   &dnsmessage.AResource{A: dnsAnswer},
		}},
	}
	b, _ := resp.Pack()
	return b
}

// listen starts TCP and UDP servers on addr inside namespace ns, closed at
// cleanup.
func listen(t *testing.T, ns, addr string, echo bool) {
	t.Helper()
	var l net.Listener
	var pc net.PacketConn
	must(t, in(t, ns, func() (err error) {
		if l, err = net.Listen("tcp4", addr); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", addr)
		return err
	}))
	t.Cleanup(func() { l.Close(); pc.Close() })
	go serveTCP(l, echo)
	go serveUDP(pc)
}

// world is a "host" namespace with an "outside" namespace routed behind it.
type world struct {
	dir, host, outside string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	w := &world{dir: dir, host: newNS(t, filepath.Join(dir, "host")), outside: newNS(t, filepath.Join(dir, "outside"))}
	hn, on := nlAt(t, w.host), nlAt(t, w.outside)
	outNS, err := netns.GetFromPath(w.outside)
	must(t, err)
	defer outNS.Close()
	la := netlink.NewLinkAttrs()
	la.Name = "uplink0"
	must(t, hn.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(outNS)}))
	linkUp(t, hn, "lo")
	up := linkUp(t, hn, "uplink0")
	addAddr(t, hn, up, hostOutIP+"/24")
	must(t, hn.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.ParseIP(outsideIP)}))
	linkUp(t, on, "lo")
	oe := linkUp(t, on, "eth0")
	addAddr(t, on, oe, outsideIP+"/24")
	addAddr(t, on, oe, privateIP+"/24")
	addAddr(t, on, oe, metadataIP+"/32")

	for _, port := range []string{"7000", "443", "8443"} {
		listen(t, w.outside, "0.0.0.0:"+port, false)
	}
	var echo, dnsTCP net.Listener
	var dns net.PacketConn
	must(t, in(t, w.outside, func() (err error) {
		if echo, err = net.Listen("tcp4", "0.0.0.0:7003"); err != nil {
			return err
		}
		if dnsTCP, err = net.Listen("tcp4", outsideIP+":53"); err != nil {
			return err
		}
		dns, err = net.ListenPacket("udp4", outsideIP+":53")
		return err
	}))
	t.Cleanup(func() { echo.Close(); dns.Close(); dnsTCP.Close() })
	go serveDNSTCP(dnsTCP)
	go serveTCP(echo, true)
	go serveDNS(dns)
	// A service on every address of the host, loopback included.
	listen(t, w.host, "0.0.0.0:7001", false)
	return w
}

func (w *world) config() Config {
	return Config{
		StateDir:     filepath.Join(w.dir, "state"),
		Table:        "covetest",
		DNSUpstreams: []string{outsideIP + ":53"},
		HostNetNS:    w.host,
	}
}

// isNetNS reports whether the file is still a mounted namespace.
func isNetNS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}
