package netenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/usererr"
)

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// hostVethName derives the host-side veth name from an environment id; it
// fits IFNAMSIZ and starts with hostVethPrefix.
func hostVethName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hostVethPrefix + hex.EncodeToString(sum[:6])
}

func (m *Manager) netnsPath(id string) string {
	return filepath.Join(m.cfg.StateDir, "netns", id)
}

// Setup gives environment id its network, creating or completing whatever
// is missing (it converges after a crash part-way). hostname is recorded in
// the returned /etc/hosts content; the caller sets the UTS hostname.
func (m *Manager) Setup(ctx context.Context, id, hostname string, p Policy, ids idmap.Range) (Attachment, error) {
	if !idRE.MatchString(id) {
		return Attachment{}, fmt.Errorf("netenv: invalid environment id %q", id)
	}
	if _, err := parsePolicy(p); err != nil {
		return Attachment{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.open(); err != nil {
		return Attachment{}, err
	}
	e := m.st.Envs[id]
	// The rules depend only on the environments' addresses and policies:
	// when neither changed, the tables need no rebuild.
	rulesCurrent := e != nil && reflect.DeepEqual(e.Policy, p) && m.rulesApplied
	if e == nil {
		ip, err := m.st.allocate(m.cfg.Subnet, m.bridgeIP)
		if err != nil {
			return Attachment{}, usererr.Wrap(err, "no network address left for the environment")
		}
		e = &envState{IP: ip}
		m.st.Envs[id] = e
	}
	e.Hostname, e.Policy = hostname, p
	if err := m.st.save(); err != nil {
		return Attachment{}, err
	}
	// The bridge may be gone if Start was not called (or after a crash).
	if err := m.ensureBridge(); err != nil {
		return Attachment{}, err
	}
	path := m.netnsPath(id)
	if err := ensureNetNSFile(path); err != nil {
		return Attachment{}, err
	}
	envNS, err := netns.GetFromPath(path)
	if err != nil {
		return Attachment{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer envNS.Close()
	envNL, err := netlink.NewHandleAt(envNS)
	if err != nil {
		return Attachment{}, fmt.Errorf("netlink in environment namespace: %w", err)
	}
	defer envNL.Close()

	hv, err := m.ensureVeth(id, envNS, envNL)
	if err != nil {
		return Attachment{}, err
	}
	if err := m.configureInside(envNL, e.IP); err != nil {
		return Attachment{}, err
	}
	if err := inNS(envNS, func() error { return m.setEnvSysctls(ids) }); err != nil {
		return Attachment{}, fmt.Errorf("environment sysctls: %w", err)
	}
	if err := setRate(m.nl, hv, p.IngressRate); err != nil {
		return Attachment{}, fmt.Errorf("ingress rate: %w", err)
	}
	eth0, err := envNL.LinkByName("eth0")
	if err != nil {
		return Attachment{}, fmt.Errorf("find eth0: %w", err)
	}
	if err := setRate(envNL, eth0, p.EgressRate); err != nil {
		return Attachment{}, fmt.Errorf("egress rate: %w", err)
	}
	if !rulesCurrent {
		if err := m.applyRules(); err != nil {
			return Attachment{}, err
		}
	}
	m.log.InfoContext(ctx, "environment network set up", "env", id, "ip", e.IP, "veth", hv.Attrs().Name)
	return m.attachment(id, e), nil
}

func (m *Manager) attachment(id string, e *envState) Attachment {
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if e.Hostname != "" {
		hosts += fmt.Sprintf("%s\t%s\n", e.IP, e.Hostname)
	}
	return Attachment{
		ID:         id,
		NetNSPath:  m.netnsPath(id),
		IP:         e.IP,
		Gateway:    m.bridgeIP,
		Hostname:   e.Hostname,
		ResolvConf: fmt.Sprintf("nameserver %s\noptions timeout:2 attempts:3\n", m.bridgeIP),
		Hosts:      hosts,
	}
}

// Teardown removes environment id's veth, namespace file, rules, rates and
// address. Unknown ids are fine.
func (m *Manager) Teardown(ctx context.Context, id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("netenv: invalid environment id %q", id)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.open(); err != nil {
		return err
	}
	// Deleting one end of a veth deletes the other and its qdiscs.
	if l, err := m.nl.LinkByName(hostVethName(id)); err == nil {
		if err := m.nl.LinkDel(l); err != nil {
			return fmt.Errorf("delete veth %s: %w", l.Attrs().Name, err)
		}
	}
	if err := removeNetNSFile(m.netnsPath(id)); err != nil {
		return err
	}
	if _, ok := m.st.Envs[id]; ok {
		delete(m.st.Envs, id)
		if err := m.st.save(); err != nil {
			return err
		}
	}
	if err := m.applyRules(); err != nil {
		return err
	}
	m.log.InfoContext(ctx, "environment network removed", "env", id)
	return nil
}

func (m *Manager) ensureBridge() error {
	br, err := m.nl.LinkByName(m.cfg.Bridge)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return fmt.Errorf("find bridge %s: %w", m.cfg.Bridge, err)
		}
		la := netlink.NewLinkAttrs()
		la.Name = m.cfg.Bridge
		if err := m.nl.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
			return fmt.Errorf("create bridge %s: %w", m.cfg.Bridge, err)
		}
		if br, err = m.nl.LinkByName(m.cfg.Bridge); err != nil {
			return fmt.Errorf("find bridge %s: %w", m.cfg.Bridge, err)
		}
	}
	if br.Type() != "bridge" {
		return usererr.New("network interface %s exists and is not a bridge", m.cfg.Bridge)
	}
	// A bridge whose MAC address was never set takes the lowest of its
	// ports'; adding an environment would then change the gateway's MAC
	// under the others' ARP caches. Setting it (to itself) pins it.
	if err := m.nl.LinkSetHardwareAddr(br, br.Attrs().HardwareAddr); err != nil {
		return fmt.Errorf("pin bridge %s address: %w", m.cfg.Bridge, err)
	}
	addr := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(m.bridgeIP, m.cfg.Subnet.Bits()))}
	if err := m.nl.AddrReplace(br, addr); err != nil {
		return fmt.Errorf("address bridge %s: %w", m.cfg.Bridge, err)
	}
	if err := m.nl.LinkSetUp(br); err != nil {
		return fmt.Errorf("bring up bridge %s: %w", m.cfg.Bridge, err)
	}
	return nil
}

// ensureVeth returns the host side of environment id's veth pair, creating
// the pair (peer "eth0" directly inside envNS) if either side is missing.
func (m *Manager) ensureVeth(id string, envNS netns.NsHandle, envNL *netlink.Handle) (netlink.Link, error) {
	name := hostVethName(id)
	hv, herr := m.nl.LinkByName(name)
	_, perr := envNL.LinkByName("eth0")
	if herr == nil && perr != nil {
		// Half-made pair from an interrupted Setup: start over.
		if err := m.nl.LinkDel(hv); err != nil {
			return nil, fmt.Errorf("delete stale veth %s: %w", name, err)
		}
		herr = errors.New("deleted")
	}
	if herr != nil {
		br, err := m.nl.LinkByName(m.cfg.Bridge)
		if err != nil {
			return nil, fmt.Errorf("find bridge: %w", err)
		}
		la := netlink.NewLinkAttrs()
		la.Name = name
		la.MTU = br.Attrs().MTU
		if la.MTU == 0 {
			la.MTU = 1500
		}
		v := &netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(envNS)}
		if err := m.nl.LinkAdd(v); err != nil {
			return nil, fmt.Errorf("create veth %s: %w", name, err)
		}
		if hv, err = m.nl.LinkByName(name); err != nil {
			return nil, fmt.Errorf("find veth %s: %w", name, err)
		}
	}
	br, err := m.nl.LinkByName(m.cfg.Bridge)
	if err != nil {
		return nil, fmt.Errorf("find bridge: %w", err)
	}
	if hv.Attrs().MasterIndex != br.Attrs().Index {
		if err := m.nl.LinkSetMaster(hv, br); err != nil {
			return nil, fmt.Errorf("attach %s to bridge: %w", name, err)
		}
	}
	if err := m.nl.LinkSetIsolated(hv, true); err != nil {
		return nil, fmt.Errorf("isolate bridge port %s: %w", name, err)
	}
	if err := m.nl.LinkSetUp(hv); err != nil {
		return nil, fmt.Errorf("bring up %s: %w", name, err)
	}
	return hv, nil
}

// configureInside brings up lo and eth0 with ip and a default route via the
// bridge.
func (m *Manager) configureInside(h *netlink.Handle, ip netip.Addr) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("find eth0: %w", err)
	}
	addr := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(ip, m.cfg.Subnet.Bits()))}
	if err := h.AddrReplace(eth0, addr); err != nil {
		return fmt.Errorf("address eth0: %w", err)
	}
	if err := h.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("bring up eth0: %w", err)
	}
	route := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.IP(m.bridgeIP.AsSlice())}
	if err := h.RouteReplace(route); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// setEnvSysctls lets the environment's users do what they could on their
// own machine, as Docker does: the namespace belongs to the host's user
// namespace (so root inside cannot change addresses or routes), which would
// otherwise also keep root inside from binding ports below 1024, and users
// from sending ICMP echo (ping) over datagram sockets. It runs inside the
// environment's network namespace (net sysctls belong to the writer's).
// ping_group_range takes host gids up to 2^31-1 only; an environment whose
// range lies above that gets no ping (see the runner's --uid-range-base).
func (m *Manager) setEnvSysctls(ids idmap.Range) error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_unprivileged_port_start", []byte("0"), 0o644); err != nil {
		return err
	}
	if ids.Size == 0 {
		return nil
	}
	last := uint64(ids.HostID) + uint64(ids.Size) - 1
	if last > 1<<31-1 {
		m.log.Warn("environment gids are above 2^31: ping over datagram sockets stays off", "range", ids.String())
		return nil
	}
	return os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte(fmt.Sprintf("%d %d", ids.HostID, last)), 0o644)
}
