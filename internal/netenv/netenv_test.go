package netenv

import (
	"bufio"
	"context"
	"fmt"
	"github.com/covedev/cove/internal/idmap"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// startManager creates and starts a Manager; at cleanup every environment
// still recorded is torn down and the manager closed, so nothing is left
// even when the test fails.
func startManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m, err := New(cfg)
	must(t, err)
	must(t, m.Start(context.Background()))
	t.Cleanup(func() {
		ctx := context.Background()
		m.Close(ctx)
		// Tear down whatever the persisted state still lists (another
		// manager may have changed it), then sweep namespace files.
		if cm, err := New(cfg); err == nil {
			for id := range cm.st.Envs {
				cm.Teardown(ctx, id)
			}
			cm.Close(ctx)
		}
		ents, _ := os.ReadDir(filepath.Join(cfg.StateDir, "netns"))
		for _, e := range ents {
			removeNetNSFile(filepath.Join(cfg.StateDir, "netns", e.Name()))
		}
	})
	return m
}

func setup(t *testing.T, m *Manager, id string, p Policy) Attachment {
	t.Helper()
	a, err := m.Setup(context.Background(), id, id+"-host", p, idmap.Range{})
	if err != nil {
		t.Fatalf("setup %s: %v", id, err)
	}
	return a
}

// reachTCP checks that addr answers from ns, waiting up to
// testutil.Patience (a loaded machine may drop the first SYN on a fresh
// veth; the kernel sends it again meanwhile). It tries three times; a
// refusal check never retries.
func reachTCP(t *testing.T, ns, addr, wantSeen string) {
	t.Helper()
	var got string
	var err error
	for range 3 {
		if got, err = tcpProbe(t, ns, addr, testutil.Patience(t)); err == nil && (wantSeen == "" || got == wantSeen) {
			return
		}
	}
	if err != nil || (wantSeen != "" && got != wantSeen) {
		t.Fatalf("tcp %s: got %q, %v; want %q", addr, got, err, wantSeen)
	}
}

func reachUDP(t *testing.T, ns, addr, wantSeen string) {
	t.Helper()
	got, err := udpProbe(t, ns, addr, testutil.Patience(t))
	if err != nil || (wantSeen != "" && got != wantSeen) {
		t.Fatalf("udp %s: got %q, %v; want %q", addr, got, err, wantSeen)
	}
}

func blockedTCP(t *testing.T, ns, addr string) {
	t.Helper()
	if got, err := tcpProbe(t, ns, addr, blockedTimeout); err == nil {
		t.Fatalf("tcp %s reachable (got %q), want blocked", addr, got)
	}
}

func blockedUDP(t *testing.T, ns, addr string) {
	t.Helper()
	if got, err := udpProbe(t, ns, addr, blockedTimeout); err == nil {
		t.Fatalf("udp %s reachable (got %q), want blocked", addr, got)
	}
}

func nameserver(t *testing.T, a Attachment) string {
	t.Helper()
	for _, line := range strings.Split(a.ResolvConf, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "nameserver" {
			return net.JoinHostPort(f[1], "53")
		}
	}
	t.Fatalf("no nameserver in resolv.conf %q", a.ResolvConf)
	return ""
}

func tableExists(t *testing.T, w *world, family nftables.TableFamily) bool {
	t.Helper()
	ns, err := netns.GetFromPath(w.host)
	must(t, err)
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	must(t, err)
	_, err = c.ListTableOfFamily("covetest", family)
	return err == nil
}

func forwardRuleCount(t *testing.T, w *world) int {
	t.Helper()
	ns, err := netns.GetFromPath(w.host)
	must(t, err)
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	must(t, err)
	tbl := &nftables.Table{Name: "covetest", Family: nftables.TableFamilyINet}
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: "forward", Table: tbl})
	must(t, err)
	return len(rules)
}

func linkExists(t *testing.T, ns, name string) bool {
	t.Helper()
	_, err := nlAt(t, ns).LinkByName(name)
	return err == nil
}

func TestEnvironmentNetwork(t *testing.T) {
	w := newWorld(t)
	cfg := w.config()
	m := startManager(t, cfg)
	a := setup(t, m, "env-a", Policy{})
	b := setup(t, m, "env-b", Policy{})

	t.Run("attachment", func(t *testing.T) {
		gw := netip.MustParseAddr("10.213.0.1")
		if a.Gateway != gw || a.IP == b.IP || !netip.MustParsePrefix("10.213.0.0/16").Contains(a.IP) || a.IP == gw {
			t.Fatalf("attachments a=%+v b=%+v", a, b)
		}
		if !isNetNS(a.NetNSPath) || !strings.Contains(a.ResolvConf, "nameserver 10.213.0.1\n") || !strings.Contains(a.Hosts, a.IP.String()+"\tenv-a-host") {
			t.Fatalf("attachment a=%+v", a)
		}
		again := setup(t, m, "env-a", Policy{})
		if again.IP != a.IP {
			t.Fatalf("re-setup changed address %s → %s", a.IP, again.IP)
		}
		if len(hostVethName("env-a")) > 15 || !linkExists(t, w.host, hostVethName("env-a")) {
			t.Fatalf("host veth %q missing or too long", hostVethName("env-a"))
		}
		var fwd string
		must(t, in(t, w.host, func() error {
			b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
			fwd = string(b)
			return err
		}))
		if strings.TrimSpace(fwd) != "1" {
			t.Fatalf("ip_forward = %q in host namespace", fwd)
		}
	})

	t.Run("egress through NAT", func(t *testing.T) {
		reachTCP(t, a.NetNSPath, outsideIP+":7000", hostOutIP)
		reachUDP(t, a.NetNSPath, outsideIP+":7000", hostOutIP)
		if err := ping(t, a.NetNSPath, outsideIP, testutil.Patience(t)); err != nil {
			t.Fatalf("ping outside: %v", err)
		}
	})

	t.Run("dns", func(t *testing.T) {
		for _, network := range []string{"udp", "tcp"} {
			got, err := dnsQuery(t, a.NetNSPath, network, nameserver(t, a), dnsName)
			if err != nil || got != netip.AddrFrom4(dnsAnswer) {
				t.Fatalf("%s query: %v, %v", network, got, err)
			}
		}
	})

	t.Run("no environment to environment", func(t *testing.T) {
		listen(t, b.NetNSPath, "0.0.0.0:7002", false)
		bAddr := net.JoinHostPort(b.IP.String(), "7002")
		// Controls: the host reaches env-b, so the servers are up.
		reachTCP(t, w.host, bAddr, "")
		reachUDP(t, w.host, bAddr, "")
		if err := ping(t, w.host, b.IP.String(), testutil.Patience(t)); err != nil {
			t.Fatalf("control ping host → env-b: %v", err)
		}
		blockedTCP(t, a.NetNSPath, bAddr)
		blockedUDP(t, a.NetNSPath, bAddr)
		if err := ping(t, a.NetNSPath, b.IP.String(), blockedTimeout); err == nil {
			t.Fatal("env-a pings env-b")
		}
	})

	t.Run("no host services", func(t *testing.T) {
		br := m.BridgeIP().String()
		reachTCP(t, w.host, "127.0.0.1:7001", "")
		reachTCP(t, w.host, br+":7001", "")
		for _, ip := range []string{br, hostOutIP, "127.0.0.1"} {
			blockedTCP(t, a.NetNSPath, ip+":7001")
			blockedUDP(t, a.NetNSPath, ip+":7001")
		}
		if err := ping(t, a.NetNSPath, br, blockedTimeout); err == nil {
			t.Fatal("env-a pings the bridge address")
		}
	})

	t.Run("no metadata", func(t *testing.T) {
		reachTCP(t, w.host, metadataIP+":7000", "") // control
		blockedTCP(t, a.NetNSPath, metadataIP+":7000")
	})

	t.Run("deny-private", func(t *testing.T) {
		c := setup(t, m, "env-c", Policy{Egress: EgressDenyPrivate})
		reachTCP(t, c.NetNSPath, outsideIP+":7000", hostOutIP)
		reachTCP(t, a.NetNSPath, privateIP+":7000", hostOutIP) // allow-all control
		blockedTCP(t, c.NetNSPath, privateIP+":7000")
		blockedUDP(t, c.NetNSPath, privateIP+":7000")
		// Re-Setup with another policy updates the rules.
		c = setup(t, m, "env-c", Policy{})
		reachTCP(t, c.NetNSPath, privateIP+":7000", hostOutIP)
	})

	t.Run("allowlist", func(t *testing.T) {
		d := setup(t, m, "env-d", Policy{Egress: EgressAllowlist, Allow: []string{outsideIP + "/32:443"}})
		reachTCP(t, d.NetNSPath, outsideIP+":443", hostOutIP)
		reachUDP(t, d.NetNSPath, outsideIP+":443", hostOutIP)
		blockedTCP(t, d.NetNSPath, outsideIP+":8443")
		blockedTCP(t, d.NetNSPath, privateIP+":443")
		if got, err := dnsQuery(t, d.NetNSPath, "udp", nameserver(t, d), dnsName); err != nil || got != netip.AddrFrom4(dnsAnswer) {
			t.Fatalf("dns from allowlisted env: %v, %v", got, err)
		}
		before := forwardRuleCount(t, w)
		must(t, m.Teardown(context.Background(), "env-d"))
		if after := forwardRuleCount(t, w); after >= before {
			t.Fatalf("forward rules %d → %d after teardown of allowlist env", before, after)
		}
	})

	t.Run("rates", func(t *testing.T) {
		e := setup(t, m, "env-e", Policy{EgressRate: 8_000_000, IngressRate: 16_000_000})
		hostRate := tbfRate(t, w.host, hostVethName("env-e"))
		envRate := tbfRate(t, e.NetNSPath, "eth0")
		if hostRate != 2_000_000 || envRate != 1_000_000 {
			t.Fatalf("tbf rates: host side %d B/s, env side %d B/s; want 2000000, 1000000", hostRate, envRate)
		}
		reachTCP(t, e.NetNSPath, outsideIP+":7000", hostOutIP)
		setup(t, m, "env-e", Policy{})
		if r := tbfRate(t, w.host, hostVethName("env-e")) + tbfRate(t, e.NetNSPath, "eth0"); r != 0 {
			t.Fatalf("rate limits left after unlimited re-setup: %d", r)
		}
	})

	t.Run("setup converges after a partial failure", func(t *testing.T) {
		// As if a crash left the address and namespace but no veth.
		hn := nlAt(t, w.host)
		l, err := hn.LinkByName(hostVethName("env-e"))
		must(t, err)
		must(t, hn.LinkDel(l))
		if linkExists(t, w.host, hostVethName("env-e")) {
			t.Fatal("veth still there")
		}
		e := setup(t, m, "env-e", Policy{})
		reachTCP(t, e.NetNSPath, outsideIP+":7000", hostOutIP)
	})

	parent := t
	t.Run("restart keeps connectivity", func(t *testing.T) {
		var conn net.Conn
		must(t, in(t, a.NetNSPath, func() (err error) {
			conn, err = net.DialTimeout("tcp4", outsideIP+":7003", testutil.Patience(t))
			return err
		}))
		defer conn.Close()
		r := bufio.NewReader(conn)
		echo := func(s string) {
			t.Helper()
			conn.SetDeadline(time.Now().Add(testutil.Patience(t)))
			fmt.Fprintln(conn, s)
			if got, err := r.ReadString('\n'); err != nil || got != s+"\n" {
				t.Fatalf("echo %q: %q, %v", s, got, err)
			}
		}
		echo("before")
		must(t, m.Start(context.Background())) // Start twice
		echo("after second start")
		must(t, m.Close(context.Background()))
		if !tableExists(t, w, nftables.TableFamilyINet) || !linkExists(t, w.host, "cove0") {
			t.Fatal("close with running environments removed the table or bridge")
		}
		echo("runner stopped")
		m2 := startManager(parent, cfg)
		echo("runner restarted")
		reachTCP(t, a.NetNSPath, outsideIP+":7000", hostOutIP)
		if got, err := dnsQuery(t, a.NetNSPath, "udp", nameserver(t, a), dnsName); err != nil || got != netip.AddrFrom4(dnsAnswer) {
			t.Fatalf("dns after restart: %v, %v", got, err)
		}
		blockedTCP(t, a.NetNSPath, net.JoinHostPort(b.IP.String(), "7002"))
		if again := setup(t, m2, "env-a", Policy{}); again.IP != a.IP {
			t.Fatalf("address changed across restart: %s → %s", a.IP, again.IP)
		}
		m = m2
	})

	t.Run("teardown", func(t *testing.T) {
		ctx := context.Background()
		must(t, m.Teardown(ctx, "env-b"))
		must(t, m.Teardown(ctx, "env-b")) // idempotent
		if linkExists(t, w.host, hostVethName("env-b")) {
			t.Fatal("env-b veth left")
		}
		if _, err := os.Stat(b.NetNSPath); !os.IsNotExist(err) {
			t.Fatalf("env-b netns file left: %v", err)
		}
		f := setup(t, m, "env-f", Policy{})
		if f.IP != b.IP {
			t.Fatalf("released address %s not reused (got %s)", b.IP, f.IP)
		}
		for _, id := range []string{"env-a", "env-c", "env-e", "env-f"} {
			must(t, m.Teardown(ctx, id))
		}
		must(t, m.Close(ctx))
		if tableExists(t, w, nftables.TableFamilyINet) || tableExists(t, w, nftables.TableFamilyBridge) || linkExists(t, w.host, "cove0") {
			t.Fatal("table or bridge left after the last environment and close")
		}
		ents, _ := os.ReadDir(cfg.StateDir + "/netns")
		if len(ents) != 0 {
			t.Fatalf("netns files left: %v", ents)
		}
		// A runner restart with nothing running leaves nothing behind.
		m3, err := New(cfg)
		must(t, err)
		must(t, m3.Start(ctx))
		if !tableExists(t, w, nftables.TableFamilyINet) || !linkExists(t, w.host, "cove0") {
			t.Fatal("start did not create table and bridge")
		}
		must(t, m3.Close(ctx))
		if tableExists(t, w, nftables.TableFamilyINet) || linkExists(t, w.host, "cove0") {
			t.Fatal("table or bridge left after restart with nothing running")
		}
	})
}

// tbfRate returns the rate (bytes/s) of the root TBF qdisc on a link, 0 if
// none.
func tbfRate(t *testing.T, ns, link string) uint64 {
	t.Helper()
	h := nlAt(t, ns)
	l, err := h.LinkByName(link)
	must(t, err)
	qs, err := h.QdiscList(l)
	must(t, err)
	for _, q := range qs {
		if tb, ok := q.(*netlink.Tbf); ok && q.Attrs().Parent == netlink.HANDLE_ROOT {
			return tb.Rate
		}
	}
	return 0
}
