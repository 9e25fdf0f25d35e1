// Package netenv gives each environment isolated networking: a persistent
// network namespace joined to a runner bridge by a veth pair, an address from
// a runner-managed subnet, NAT for egress, a DNS relay on the bridge address,
// per-class egress policy and bandwidth limits, and nftables rules (one table
// per family, owned by the runner) that keep environments away from each
// other, from the host's own services and from cloud metadata addresses.
//
// State (address allocations and policies) is persisted under
// Config.StateDir, so a runner restart rebuilds the rules without disturbing
// running environments.
package netenv

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/covedev/cove/internal/usererr"
)

// Egress policies.
const (
	EgressAllowAll    = "allow-all"
	EgressDenyPrivate = "deny-private"
	EgressAllowlist   = "allowlist"
)

// Policy is an environment class's network policy.
type Policy struct {
	Egress      string   // "allow-all" (default when ""), "deny-private", "allowlist"
	Allow       []string // allowlist entries: "CIDR" or "CIDR:PORT" (tcp and udp), e.g. "192.0.2.0/24:443"
	EgressRate  int64    // bits/s, 0 = unlimited (environment → world)
	IngressRate int64    // bits/s, 0 = unlimited (world → environment)
}

// Config configures a Manager.
type Config struct {
	Bridge       string       // default "cove0"
	Subnet       netip.Prefix // default 10.213.0.0/16; the bridge takes the first address
	StateDir     string       // persisted allocations + netns bind-mount files
	Table        string       // nftables table name (inet and bridge families), default "cove"
	DNSUpstreams []string     // "ip:port"; default: nameservers of the host's /etc/resolv.conf
	HostNetNS    string       // path of the network namespace to act in; "" = the calling process's
	Log          *slog.Logger
}

// Attachment describes an environment's network.
type Attachment struct {
	ID         string
	NetNSPath  string     // bind-mounted network namespace, for the OCI spec
	IP         netip.Addr // the environment's address on eth0
	Gateway    netip.Addr // the bridge address: default route and DNS relay
	Hostname   string
	ResolvConf string // content for /etc/resolv.conf
	Hosts      string // content for /etc/hosts
}

// Manager owns the bridge, the nftables tables, the DNS relay and the
// environments' namespaces on one host.
type Manager struct {
	cfg      Config
	log      *slog.Logger
	bridgeIP netip.Addr

	mu     sync.Mutex
	st     *state
	hostNS netns.NsHandle
	nl     *netlink.Handle
	relay  *relay
	// rulesApplied: the tables match st (set by applyRules, cleared when
	// they are deleted).
	rulesApplied bool
}

// hostVethPrefix starts the name of every host-side veth; the bridge-family
// rules match it.
const hostVethPrefix = "cv"

// New validates cfg, fills defaults and loads persisted state. It changes
// nothing on the host; call Start.
func New(cfg Config) (*Manager, error) {
	if cfg.Bridge == "" {
		cfg.Bridge = "cove0"
	}
	if len(cfg.Bridge) > 15 {
		return nil, usererr.New("bridge name %q is longer than 15 characters", cfg.Bridge)
	}
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = netip.MustParsePrefix("10.213.0.0/16")
	}
	cfg.Subnet = cfg.Subnet.Masked()
	if !cfg.Subnet.Addr().Is4() || cfg.Subnet.Bits() > 29 {
		return nil, usererr.New("environment subnet %s: need an IPv4 prefix of /29 or larger", cfg.Subnet)
	}
	if cfg.Table == "" {
		cfg.Table = "cove"
	}
	if cfg.StateDir == "" {
		return nil, fmt.Errorf("netenv: StateDir is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.DNSUpstreams) == 0 {
		cfg.DNSUpstreams = hostNameservers("/etc/resolv.conf")
	}
	for _, dir := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, "netns")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
	}
	st, err := loadState(filepath.Join(cfg.StateDir, "state.json"))
	if err != nil {
		return nil, err
	}
	return &Manager{
		cfg:      cfg,
		log:      cfg.Log,
		bridgeIP: cfg.Subnet.Addr().Next(),
		st:       st,
		hostNS:   -1,
	}, nil
}

// BridgeIP returns the bridge's address (gateway and DNS relay).
func (m *Manager) BridgeIP() netip.Addr { return m.bridgeIP }

// open opens the host namespace and a netlink handle in it, once.
func (m *Manager) open() error {
	if m.nl != nil {
		return nil
	}
	path := m.cfg.HostNetNS
	if path == "" {
		path = "/proc/self/ns/net"
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open host network namespace %s: %w", path, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return fmt.Errorf("netlink in host namespace: %w", err)
	}
	m.hostNS, m.nl = ns, h
	return nil
}

func (m *Manager) closeHandles() {
	if m.nl != nil {
		m.nl.Close()
		m.nl = nil
	}
	if m.hostNS >= 0 {
		m.hostNS.Close()
		m.hostNS = -1
	}
}

// Start ensures the bridge (address, up), IP forwarding, the nftables tables
// rebuilt from the persisted attachments and the DNS relay. It is idempotent
// and does not disturb running environments, so it is also what a restarted
// runner calls.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.open(); err != nil {
		return err
	}
	if err := m.ensureBridge(); err != nil {
		return err
	}
	if err := inNS(m.hostNS, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
	}); err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	}
	if err := m.applyRules(); err != nil {
		return err
	}
	if m.relay == nil {
		r, err := startRelay(ctx, m.log, m.hostNS, m.bridgeIP, m.cfg.DNSUpstreams)
		if err != nil {
			return err
		}
		m.relay = r
	}
	m.log.InfoContext(ctx, "environment network ready", "bridge", m.cfg.Bridge, "subnet", m.cfg.Subnet, "environments", len(m.st.Envs))
	return nil
}

// Close stops the DNS relay. With no attachments left it also removes the
// bridge and the nftables tables; otherwise everything stays so running
// environments keep their network across a runner restart.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.relay != nil {
		m.relay.close()
		m.relay = nil
	}
	defer m.closeHandles()
	if len(m.st.Envs) > 0 {
		return nil
	}
	if err := m.open(); err != nil {
		return err
	}
	if err := m.deleteRules(); err != nil {
		return err
	}
	if l, err := m.nl.LinkByName(m.cfg.Bridge); err == nil {
		if err := m.nl.LinkDel(l); err != nil {
			return fmt.Errorf("delete bridge %s: %w", m.cfg.Bridge, err)
		}
	}
	m.log.InfoContext(ctx, "environment network removed", "bridge", m.cfg.Bridge)
	return nil
}

// hostNameservers returns the IPv4/IPv6 nameservers of a resolv.conf as
// "ip:53".
func hostNameservers(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		out = append(out, netip.AddrPortFrom(a, 53).String())
	}
	return out
}

// Namespaced reports that environments get network namespaces of their
// own (the runner's network interface; its loopback-only alternative does
// not).
func (m *Manager) Namespaced() bool { return true }
