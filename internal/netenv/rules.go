package netenv

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// applyRules replaces the runner's inet and bridge tables with rules built
// from the current state, in one atomic netlink batch.
func (m *Manager) applyRules() error {
	c, err := nftables.New(nftables.WithNetNSFd(int(m.hostNS)))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	inet := &nftables.Table{Name: m.cfg.Table, Family: nftables.TableFamilyINet}
	bridge := &nftables.Table{Name: m.cfg.Table, Family: nftables.TableFamilyBridge}
	for _, t := range []*nftables.Table{inet, bridge} {
		// Add first so the delete cannot fail on a missing table.
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
	}
	m.bridgeRules(c, bridge)
	m.inputRules(c, inet)
	m.forwardRules(c, inet)
	m.natRules(c, inet)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("apply nftables rules (table %s): %w", m.cfg.Table, err)
	}
	m.rulesApplied = true
	return nil
}

// deleteRules removes the runner's tables.
func (m *Manager) deleteRules() error {
	c, err := nftables.New(nftables.WithNetNSFd(int(m.hostNS)))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	m.rulesApplied = false
	for _, f := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyBridge} {
		t := &nftables.Table{Name: m.cfg.Table, Family: f}
		c.AddTable(t)
		c.DelTable(t)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table %s: %w", m.cfg.Table, err)
	}
	return nil
}

func chain(c *nftables.Conn, t *nftables.Table, name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
}

func rule(c *nftables.Conn, ch *nftables.Chain, exprs ...[]expr.Any) {
	c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: slices.Concat(exprs...)})
}

// bridgeRules drop every frame the bridge would forward from one
// environment's port to another: environments share no L2.
func (m *Manager) bridgeRules(c *nftables.Conn, t *nftables.Table) {
	fwd := chain(c, t, "forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	rule(c, fwd, ifname(expr.MetaKeyIIFNAME, hostVethPrefix, true, expr.CmpOpEq), verdict(expr.VerdictDrop))
	rule(c, fwd, ifname(expr.MetaKeyOIFNAME, hostVethPrefix, true, expr.CmpOpEq), verdict(expr.VerdictDrop))
}

// inputRules keep environments away from the host's own addresses and
// services, except the DNS relay.
func (m *Manager) inputRules(c *nftables.Conn, t *nftables.Table) {
	in := chain(c, t, "input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	fromBr := ifname(expr.MetaKeyIIFNAME, m.cfg.Bridge, false, expr.CmpOpEq)
	rule(c, in, fromBr, ctEstablished(), verdict(expr.VerdictAccept))
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		rule(c, in, fromBr, isIPv4(), ipAddr(16, netip.PrefixFrom(m.bridgeIP, 32)), l4(proto), dport(53), verdict(expr.VerdictAccept))
	}
	rule(c, in, fromBr, reject())
}

// forwardRules: return traffic in, no routed environment ↔ environment
// traffic, no new connections into environments, IPv4 only, no spoofed
// sources, no link-local/metadata, then each environment's egress policy.
func (m *Manager) forwardRules(c *nftables.Conn, t *nftables.Table) {
	fwd := chain(c, t, "forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	fromBr := ifname(expr.MetaKeyIIFNAME, m.cfg.Bridge, false, expr.CmpOpEq)
	toBr := ifname(expr.MetaKeyOIFNAME, m.cfg.Bridge, false, expr.CmpOpEq)
	// What environments may not do is rejected, not dropped: their tools
	// fail at once ("administratively prohibited") instead of hanging
	// until a timeout. Spoofed sources and unsolicited traffic into
	// environments are dropped.
	drop, deny, accept := verdict(expr.VerdictDrop), reject(), verdict(expr.VerdictAccept)

	rule(c, fwd, fromBr, toBr, deny)
	rule(c, fwd, fromBr, ctEstablished(), accept)
	rule(c, fwd, toBr, ctEstablished(), accept)
	rule(c, fwd, toBr, drop)
	rule(c, fwd, fromBr, notIPv4(), deny)
	rule(c, fwd, fromBr, ipAddrNeq(12, m.cfg.Subnet), drop)
	rule(c, fwd, fromBr, ipAddr(16, netip.MustParsePrefix("169.254.0.0/16")), deny)

	ids := make([]string, 0, len(m.st.Envs))
	for id := range m.st.Envs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		e := m.st.Envs[id]
		src := ipAddr(12, netip.PrefixFrom(e.IP, 32))
		switch e.Policy.Egress {
		case EgressDenyPrivate:
			for _, p := range privateV4 {
				rule(c, fwd, fromBr, src, ipAddr(16, p), deny)
			}
		case EgressAllowlist:
			allow, err := parsePolicy(e.Policy)
			if err != nil {
				m.log.Error("bad persisted policy; denying all egress", "env", id, "err", err)
				allow = nil
			}
			for _, a := range allow {
				if a.Port == 0 {
					rule(c, fwd, fromBr, src, ipAddr(16, a.Prefix), accept)
					continue
				}
				for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
					rule(c, fwd, fromBr, src, ipAddr(16, a.Prefix), l4(proto), dport(a.Port), accept)
				}
			}
			rule(c, fwd, fromBr, src, deny)
		}
	}
	rule(c, fwd, fromBr, accept)
}

// natRules masquerade the environments' subnet leaving by any other
// interface than the bridge.
func (m *Manager) natRules(c *nftables.Conn, t *nftables.Table) {
	post := chain(c, t, "postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	rule(c, post, isIPv4(), ipAddr(12, m.cfg.Subnet), ifname(expr.MetaKeyOIFNAME, m.cfg.Bridge, false, expr.CmpOpNeq), []expr.Any{&expr.Masq{}})
}

// ifname matches an interface name exactly or, with prefix, by its start.
func ifname(key expr.MetaKey, name string, prefix bool, op expr.CmpOp) []expr.Any {
	data := []byte(name)
	if !prefix {
		data = make([]byte, unix.IFNAMSIZ)
		copy(data, name)
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: data},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// reject answers with "administratively prohibited" (ICMP, or ICMPv6).
func reject() []expr.Any {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}
}

func ctEstablished() []expr.Any {
	mask := binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func isIPv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

func notIPv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

// ipAddr matches the IPv4 source (offset 12) or destination (offset 16)
// address against p. It must follow isIPv4() or an equivalent guarantee.
func ipAddr(offset uint32, p netip.Prefix) []expr.Any { return ipAddrOp(offset, p, expr.CmpOpEq) }

func ipAddrNeq(offset uint32, p netip.Prefix) []expr.Any {
	return ipAddrOp(offset, p, expr.CmpOpNeq)
}

func ipAddrOp(offset uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	p = p.Masked()
	mask := []byte(ipNet(p).Mask)
	addr := p.Addr().AsSlice()
	out := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4}}
	if p.Bits() < 32 {
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)})
	}
	return append(out, &expr.Cmp{Op: op, Register: 1, Data: addr})
}

func l4(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

func dport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
	}
}
