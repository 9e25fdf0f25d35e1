package hostfetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/covedev/cove/internal/errdefs"
)

// MaxRedirects is how many redirects one fetch follows.
const MaxRedirects = 5

// DeniedError is a connection the policy refused: a non-public address the
// operator did not allow.
type DeniedError struct {
	Addr   netip.AddrPort
	Reason string // "loopback", "link-local", "private", ...
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("address %s is not allowed (%s)", e.Addr, e.Reason)
}

// ErrorCategory: a refusal by the operator's policy, which retrying does not
// change.
func (e *DeniedError) ErrorCategory() errdefs.Category { return errdefs.CategoryPermissionDenied }

// PlainHTTPError is a plain-HTTP request to a host not listed as insecure.
type PlainHTTPError struct{ Host string }

func (e *PlainHTTPError) Error() string {
	return fmt.Sprintf("plain HTTP to %s is not allowed", e.Host)
}

// ErrorCategory: a refusal by the operator's policy.
func (e *PlainHTTPError) ErrorCategory() errdefs.Category { return errdefs.CategoryPermissionDenied }

// RedirectError is a redirect the policy refused.
type RedirectError struct{ Reason string }

func (e *RedirectError) Error() string { return "redirect refused: " + e.Reason }

// ErrorCategory: a refusal by the policy.
func (e *RedirectError) ErrorCategory() errdefs.Category { return errdefs.CategoryPermissionDenied }

// Explain returns a message a user can act on (and that holds nothing a
// server sent) if err was caused by the policy.
func Explain(err error) (string, bool) {
	var de *DeniedError
	var pe *PlainHTTPError
	var re *RedirectError
	switch {
	case errors.As(err, &de):
		return fmt.Sprintf("%s: this runner fetches images and features only from public addresses unless its operator allows the destination (--allow-private-fetch, --insecure-registry)", de.Error()), true
	case errors.As(err, &pe):
		return fmt.Sprintf("%s: use https, or ask the runner's operator to list the host with --insecure-registry", pe.Error()), true
	case errors.As(err, &re):
		return re.Error(), true
	}
	return "", false
}

// CheckRedirect is an http.Client CheckRedirect that refuses a redirect from
// https to another scheme and more than MaxRedirects redirects. (The
// transport refuses the same downgrade for clients it cannot configure.)
func CheckRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= MaxRedirects {
		return &RedirectError{Reason: fmt.Sprintf("more than %d redirects", MaxRedirects)}
	}
	if via[len(via)-1].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return &RedirectError{Reason: "from https to " + safeScheme(req.URL.Scheme)}
	}
	return nil
}

func safeScheme(s string) string {
	if s == "http" || s == "https" {
		return s
	}
	return "another scheme"
}

// transport applies the scheme rules, then the dialer's address rules.
type transport struct {
	p    *Policy
	base *http.Transport
}

func newTransport(p *Policy) *transport {
	guarded := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: p.control}
	open := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err == nil && p.nameAllowed(host, port) {
			return open.DialContext(ctx, network, addr)
		}
		return guarded.DialContext(ctx, network, addr)
	}
	base.ResponseHeaderTimeout = 2 * time.Minute
	if p.roots != nil {
		base.TLSClientConfig = &tls.Config{RootCAs: p.roots}
	}
	return &transport{p: p, base: base}
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	fail := func(err error) (*http.Response, error) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	switch req.URL.Scheme {
	case "https":
	case "http":
		if prev := req.Response; prev != nil && prev.Request != nil && prev.Request.URL.Scheme == "https" {
			return fail(&RedirectError{Reason: "from https to http"})
		}
		if !t.p.Insecure(req.URL.Host) {
			h, _ := splitHost(req.URL.Host, "")
			return fail(&PlainHTTPError{Host: h})
		}
	default:
		return fail(errdefs.InvalidArgument(fmt.Errorf("unsupported URL scheme %q", safeScheme(req.URL.Scheme))))
	}
	return t.base.RoundTrip(req)
}

// control runs just before each connect(2), on the address being connected
// to: whatever a name resolved to, a refused address is never reached.
func (p *Policy) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("hostfetch: unexpected dial address %q", address)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if p.addrAllowed(ap) {
		return nil
	}
	if why := nonPublic(ap.Addr()); why != "" {
		return &DeniedError{Addr: ap, Reason: why}
	}
	local, err := p.hostAddrs()
	if err != nil {
		return &DeniedError{Addr: ap, Reason: "the runner host's addresses cannot be listed"}
	}
	for _, a := range local {
		if a == ap.Addr() {
			return &DeniedError{Addr: ap, Reason: "an address of the runner host"}
		}
	}
	return nil
}

func (p *Policy) hostAddrs() ([]netip.Addr, error) {
	if p.localAddrs != nil {
		return p.localAddrs()
	}
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(ifas))
	for _, ifa := range ifas {
		if n, ok := ifa.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	return out, nil
}
