package netenv

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/covedev/cove/internal/usererr"
)

// privateV4 are the destinations deny-private refuses (IPv6 is never
// forwarded for environments, so fc00::/7 needs no rule).
var privateV4 = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("169.254.0.0/16"),
}

// allowEntry is one allowlist entry; Port 0 means any port and protocol.
type allowEntry struct {
	Prefix netip.Prefix
	Port   uint16
}

// parsePolicy validates p and returns its allowlist.
func parsePolicy(p Policy) ([]allowEntry, error) {
	if p.EgressRate < 0 || p.IngressRate < 0 {
		return nil, usererr.New("network rates must not be negative")
	}
	switch p.Egress {
	case "", EgressAllowAll, EgressDenyPrivate:
		return nil, nil
	case EgressAllowlist:
	default:
		return nil, usererr.New("unknown egress policy %q (want allow-all, deny-private or allowlist)", p.Egress)
	}
	out := make([]allowEntry, 0, len(p.Allow))
	for _, s := range p.Allow {
		e, err := parseAllow(s)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func parseAllow(s string) (allowEntry, error) {
	bad := usererr.New("bad egress allowlist entry %q (want CIDR or CIDR:PORT, IPv4)", s)
	cidr, port := s, ""
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		cidr, port = s[:i], s[i+1:]
	}
	pfx, err := netip.ParsePrefix(cidr)
	if err != nil {
		a, aerr := netip.ParseAddr(cidr)
		if aerr != nil {
			return allowEntry{}, bad
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	if !pfx.Addr().Is4() {
		return allowEntry{}, bad
	}
	e := allowEntry{Prefix: pfx.Masked()}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return allowEntry{}, bad
		}
		e.Port = uint16(n)
	}
	return e, nil
}
