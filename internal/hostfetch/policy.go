// Package hostfetch is how the runner host fetches what a repository or an
// API caller names: container images (devcontainer.json, compose,
// spec.defaultImage) and dev container features (OCI references and tarball
// URLs). Those requests leave from the runner host's own network, outside
// every environment's egress policy, so a Policy decides where they may go:
//
//   - only public addresses, unless the operator allows a private network,
//     address or host (--allow-private-fetch); loopback, link-local (cloud
//     metadata), RFC 1918, ULA, CGNAT, other special-purpose ranges and the
//     runner host's own addresses are refused otherwise;
//   - https only, unless the operator lists the host as an insecure registry
//     (--insecure-registry), which also allows its address;
//   - no redirect from https to plain http, at most a few redirects.
//
// The address check runs in the dialer, on the address actually connected
// to, so a name that resolves (or re-resolves: DNS rebinding) to a refused
// address is refused too.
package hostfetch

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
)

// Policy says where the runner host may fetch from. The zero Policy allows
// public addresses over https only. A Policy is safe for concurrent use.
type Policy struct {
	nets     []netip.Prefix   // private networks allowed (any port)
	addrs    []netip.AddrPort // private address:port allowed
	names    []hostPort       // hosts allowed by the name a reference uses
	insecure []hostPort       // hosts spoken to over plain HTTP

	// localAddrs lists the host's own addresses (tests replace it).
	localAddrs func() ([]netip.Addr, error)
	roots      *x509.CertPool // nil: the system's

	once sync.Once
	rt   *transport
}

// hostPort is a host as written in a reference (lower case, IPv6 without
// brackets) and its port; an empty port matches every port.
type hostPort struct{ host, port string }

func (h hostPort) matches(host, port string) bool {
	return h.host == host && (h.port == "" || h.port == port)
}

func (h hostPort) String() string {
	if h.port == "" {
		return h.host
	}
	return net.JoinHostPort(h.host, h.port)
}

// New returns a Policy. Each allow entry is a CIDR ("10.1.0.0/16"), an
// address ("10.1.2.3"), an address and port ("10.1.2.3:5000"), or a host
// name with an optional port ("registry.lan", "registry.lan:5000"); a name
// is trusted whatever it resolves to. Each insecure entry is HOST[:PORT]
// ("127.0.0.1:5000", "localhost"): that host is spoken to over plain HTTP,
// and it is allowed as if listed in allow.
func New(allow, insecure []string) (*Policy, error) {
	p := &Policy{}
	for _, s := range allow {
		s = strings.TrimSpace(s)
		if pfx, err := netip.ParsePrefix(s); err == nil {
			p.nets = append(p.nets, unmapPrefix(pfx).Masked())
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil {
			a = a.Unmap()
			p.nets = append(p.nets, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		if ap, err := netip.ParseAddrPort(s); err == nil {
			p.addrs = append(p.addrs, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
			continue
		}
		hp, err := parseHostPort(s)
		if err != nil {
			return nil, fmt.Errorf("allowed fetch destination %q: want CIDR, IP, IP:PORT, HOST or HOST:PORT", s)
		}
		p.names = append(p.names, hp)
	}
	for _, s := range insecure {
		hp, err := parseHostPort(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("insecure registry %q: want HOST or HOST:PORT", s)
		}
		p.insecure = append(p.insecure, hp)
	}
	return p, nil
}

func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// parseHostPort parses HOST or HOST:PORT (IPv6 in brackets when a port is
// given) into its normalised form.
func parseHostPort(s string) (hostPort, error) {
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
		if !validPort(port) {
			return hostPort{}, fmt.Errorf("bad port %q", port)
		}
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if a, err := netip.ParseAddr(host); err == nil {
		return hostPort{host: a.Unmap().String(), port: port}, nil
	}
	if !validHostname(host) {
		return hostPort{}, fmt.Errorf("bad host %q", host)
	}
	return hostPort{host: host, port: port}, nil
}

func validPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n > 0 && n < 65536
}

func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// splitHost splits a URL host or registry name into its normalised host
// and port (defaultPort when it has none).
func splitHost(hostport, defaultPort string) (string, string) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, defaultPort
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().String()
	}
	return host, port
}

// Insecure reports whether host ("registry.lan:5000", a URL's Host) may be
// spoken to over plain HTTP. A host without a port means port 80.
func (p *Policy) Insecure(host string) bool {
	h, port := splitHost(host, "80")
	for _, r := range p.insecure {
		if r.matches(h, port) {
			return true
		}
	}
	return false
}

// nameAllowed reports whether the dial address host:port was named by the
// operator, which trusts it whatever it resolves to.
func (p *Policy) nameAllowed(host, port string) bool {
	h, _ := splitHost(host, "")
	for _, list := range [][]hostPort{p.names, p.insecure} {
		for _, r := range list {
			if r.matches(h, port) {
				return true
			}
		}
	}
	return false
}

// addrAllowed reports whether the operator allowed a connection to ap.
func (p *Policy) addrAllowed(ap netip.AddrPort) bool {
	for _, n := range p.nets {
		if n.Contains(ap.Addr()) {
			return true
		}
	}
	for _, a := range p.addrs {
		if a == ap {
			return true
		}
	}
	return false
}

// String describes the allowances, for the runner's start-up log.
func (p *Policy) String() string {
	var allow []string
	for _, n := range p.nets {
		allow = append(allow, n.String())
	}
	for _, a := range p.addrs {
		allow = append(allow, a.String())
	}
	for _, n := range p.names {
		allow = append(allow, n.String())
	}
	var insecure []string
	for _, h := range p.insecure {
		insecure = append(insecure, h.String())
	}
	return fmt.Sprintf("public addresses over https; private allowed: [%s]; plain HTTP: [%s]",
		strings.Join(allow, " "), strings.Join(insecure, " "))
}

// TrustRoots makes the policy's transport trust these certificate
// authorities instead of the system's (a private registry's CA; tests). Call
// it before the first Transport or Client.
func (p *Policy) TrustRoots(pool *x509.CertPool) { p.roots = pool }

// Transport returns the policy's HTTP transport (one per Policy, so
// connections are reused). Give it to go-containerregistry with
// remote.WithTransport; for plain HTTP clients use Client.
func (p *Policy) Transport() http.RoundTripper {
	p.once.Do(func() { p.rt = newTransport(p) })
	return p.rt
}

// Client returns an HTTP client on the policy's transport that refuses
// redirects from https to plain http and stops after MaxRedirects.
func (p *Policy) Client() *http.Client {
	return &http.Client{Transport: p.Transport(), CheckRedirect: CheckRedirect}
}

var (
	publicOnly = &Policy{}
	current    atomic.Pointer[Policy]
)

// SetDefault makes p the policy of fetches that are not given one (the
// runner sets it once at start from its flags).
func SetDefault(p *Policy) { current.Store(p) }

// Default returns the policy set by SetDefault or, without one, a policy
// that allows public addresses over https only.
func Default() *Policy {
	if p := current.Load(); p != nil {
		return p
	}
	return publicOnly
}
