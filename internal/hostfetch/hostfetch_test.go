package hostfetch

import (
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/testutil"
)

const secret = "internal-secret-page: db_password=hunter2"

// stub is a loopback server counting connections; it answers 418 with a
// secret body unless handler is set.
type stub struct {
	*httptest.Server
	conns atomic.Int32
}

func newStub(t *testing.T, tls bool, handler http.HandlerFunc) *stub {
	t.Helper()
	if handler == nil {
		handler = func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, secret)
		}
	}
	s := &stub{Server: httptest.NewUnstartedServer(handler)}
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	if tls {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func (s *stub) port() string {
	_, p, _ := net.SplitHostPort(s.Listener.Addr().String())
	return p
}

// trust makes p's transport accept the test servers' certificate.
func trust(p *Policy, s *stub) {
	p.Transport().(*transport).base.TLSClientConfig = s.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(testutil.Context(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err == nil {
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
	}
	return resp, err
}

func mustPolicy(t *testing.T, allow, insecure []string) *Policy {
	t.Helper()
	p, err := New(allow, insecure)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNonPublic(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1":                "loopback",
		"::1":                      "loopback",
		"::ffff:127.0.0.1":         "loopback",
		"169.254.169.254":          "link-local",
		"fe80::1%eth0":             "link-local",
		"10.1.2.3":                 "private",
		"172.16.0.1":               "private",
		"192.168.1.1":              "private",
		"fd00::1":                  "private",
		"100.64.0.1":               "shared address space (CGNAT)",
		"0.0.0.0":                  "unspecified",
		"::":                       "unspecified",
		"224.0.0.1":                "multicast",
		"255.255.255.255":          "reserved",
		"198.51.100.2":             "documentation",
		"64:ff9b::a9fe:a9fe":       "link-local (through NAT64)",
		"2002:7f00:1::1":           "loopback (through 6to4)",
		"fec0::1":                  "site-local (deprecated)",
		"8.8.8.8":                  "",
		"1.1.1.1":                  "",
		"2606:4700:4700::1111":     "",
		"64:ff9b::808:808":         "",
		"2002:808:808::1":          "",
		"100.128.0.1":              "",
		"172.32.0.1":               "",
		"::ffff:93.184.216.34":     "",
		"2a00:1450:4001:80b::200e": "",
	} {
		if got := nonPublic(netip.MustParseAddr(addr)); got != want {
			t.Errorf("nonPublic(%s) = %q, want %q", addr, got, want)
		}
	}
}

func TestNewParsesEntries(t *testing.T) {
	p, err := New([]string{"10.0.0.0/8", "192.168.1.5", "127.0.0.1:5000", "Registry.LAN", "mirror.lan:8443", "[fd00::1]:443"},
		[]string{"localhost:5000", "10.1.1.1", "[::1]:5000"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ap   string
		want bool
	}{
		{"10.9.9.9:1", true}, {"192.168.1.5:22", true}, {"192.168.1.6:22", false},
		{"127.0.0.1:5000", true}, {"127.0.0.1:5001", false}, {"[fd00::1]:443", true},
	} {
		if got := p.addrAllowed(netip.MustParseAddrPort(c.ap)); got != c.want {
			t.Errorf("addrAllowed(%s) = %v", c.ap, got)
		}
	}
	for _, c := range []struct {
		host, port string
		want       bool
	}{
		{"registry.lan", "443", true}, {"REGISTRY.lan", "5000", true}, {"mirror.lan", "8443", true},
		{"mirror.lan", "443", false}, {"localhost", "5000", true}, {"localhost", "5001", false},
		{"10.1.1.1", "80", true}, {"::1", "5000", true}, {"other.lan", "443", false},
	} {
		if got := p.nameAllowed(c.host, c.port); got != c.want {
			t.Errorf("nameAllowed(%s, %s) = %v", c.host, c.port, got)
		}
	}
	for host, want := range map[string]bool{
		"localhost:5000": true, "localhost": false, "10.1.1.1": true, "10.1.1.1:8080": true,
		"[::1]:5000": true, "registry.lan": false, "127.0.0.1:5000": false,
	} {
		if got := p.Insecure(host); got != want {
			t.Errorf("Insecure(%s) = %v", host, got)
		}
	}
	for _, bad := range []string{"", "a b", "http://x", "x:99999", "-x.lan", "x/y"} {
		if _, err := New([]string{bad}, nil); err == nil {
			t.Errorf("allow %q accepted", bad)
		}
		if _, err := New(nil, []string{bad}); err == nil && bad != "" {
			t.Errorf("insecure %q accepted", bad)
		}
	}
}

// The review's reproduction: a loopback service answering 418 with a secret.
// Without an allowance nothing connects to it, whatever the URL says.
func TestLoopbackRefusedAtConnect(t *testing.T) {
	s := newStub(t, true, nil)
	p := mustPolicy(t, nil, nil)
	trust(p, s)
	for _, url := range []string{
		"https://127.0.0.1:" + s.port() + "/v2/",
		"https://localhost:" + s.port() + "/v2/", // a name resolving to loopback (as a rebinding DNS would)
		"https://[::ffff:127.0.0.1]:" + s.port() + "/v2/",
	} {
		_, err := get(t, p.Client(), url)
		var de *DeniedError
		if !errors.As(err, &de) {
			t.Fatalf("GET %s: %v, want a refused address", url, err)
		}
		msg, ok := Explain(err)
		if !ok || !strings.Contains(msg, "is not allowed (loopback)") || strings.Contains(msg, "hunter2") {
			t.Errorf("GET %s: message %q", url, msg)
		}
	}
	// Plain HTTP is refused before any dial.
	_, err := get(t, p.Client(), "http://127.0.0.1:"+s.port()+"/v2/")
	var pe *PlainHTTPError
	if !errors.As(err, &pe) {
		t.Fatalf("plain http: %v", err)
	}
	if n := s.conns.Load(); n != 0 {
		t.Fatalf("the loopback service saw %d connections", n)
	}
}

func TestHostAddressRefused(t *testing.T) {
	s := newStub(t, true, nil)
	p := mustPolicy(t, nil, nil)
	trust(p, s)
	// Pretend 127.0.0.1 is public and the host's own address.
	p.localAddrs = func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil }
	if err := p.control("tcp4", "127.0.0.1:443", nil); err == nil {
		t.Fatal("loopback allowed")
	}
	if err := p.control("tcp4", "93.184.216.34:443", nil); err != nil {
		t.Fatalf("public address refused: %v", err)
	}
	p.localAddrs = func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil }
	var de *DeniedError
	if err := p.control("tcp4", "93.184.216.34:443", nil); !errors.As(err, &de) || de.Reason != "an address of the runner host" {
		t.Fatalf("host's own address: %v", err)
	}
}

func TestOperatorAllowance(t *testing.T) {
	s := newStub(t, true, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	plain := newStub(t, false, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })

	p := mustPolicy(t, []string{"127.0.0.1/32"}, nil)
	trust(p, s)
	if resp, err := get(t, p.Client(), "https://127.0.0.1:"+s.port()+"/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("allowed network: %v", err)
	}
	// Allowed address, but plain HTTP is a separate allowance.
	var pe *PlainHTTPError
	if _, err := get(t, p.Client(), "http://127.0.0.1:"+plain.port()+"/"); !errors.As(err, &pe) {
		t.Fatalf("plain http without --insecure-registry: %v", err)
	}

	// An insecure registry entry allows that host:port, over plain HTTP.
	p = mustPolicy(t, nil, []string{"127.0.0.1:" + plain.port()})
	if resp, err := get(t, p.Client(), "http://127.0.0.1:"+plain.port()+"/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("insecure registry: %v", err)
	}
	var de *DeniedError
	if _, err := get(t, p.Client(), "https://127.0.0.1:"+s.port()+"/"); !errors.As(err, &de) {
		t.Fatalf("other port of an insecure registry: %v", err)
	}
}

func TestRedirects(t *testing.T) {
	target := newStub(t, false, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "secret") })
	targetTLS := newStub(t, true, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "secret") })
	var to atomic.Value
	redir := newStub(t, true, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/loop" {
			http.Redirect(w, r, "/loop", http.StatusFound)
			return
		}
		http.Redirect(w, r, to.Load().(string), http.StatusFound)
	})
	// The redirecting server is allowed by name and port only; the plain
	// target is even listed as insecure.
	p := mustPolicy(t, []string{"localhost:" + redir.port()}, []string{"127.0.0.1:" + target.port()})
	trust(p, redir)
	p.Transport().(*transport).base.TLSClientConfig.ServerName = "example.com" // in the test certificate
	start := "https://localhost:" + redir.port() + "/f.tgz"

	var re *RedirectError
	to.Store("http://127.0.0.1:" + target.port() + "/f.tgz")
	if _, err := get(t, p.Client(), start); !errors.As(err, &re) {
		t.Errorf("https→http redirect: %v", err)
	}
	// A client without CheckRedirect (go-containerregistry's) is stopped by
	// the transport.
	if _, err := get(t, &http.Client{Transport: p.Transport()}, start); !errors.As(err, &re) {
		t.Errorf("https→http redirect through the transport: %v", err)
	}
	var de *DeniedError
	to.Store("https://127.0.0.1:" + targetTLS.port() + "/f.tgz")
	if _, err := get(t, p.Client(), start); !errors.As(err, &de) {
		t.Errorf("redirect to 127.0.0.1: %v", err)
	}
	if _, err := get(t, p.Client(), "https://localhost:"+redir.port()+"/loop"); !errors.As(err, &re) {
		t.Errorf("redirect loop: %v", err)
	}
	if n, m := target.conns.Load(), targetTLS.conns.Load(); n != 0 || m != 0 {
		t.Fatalf("redirect targets saw %d and %d connections", n, m)
	}
}

func TestDefault(t *testing.T) {
	if Default() != publicOnly {
		t.Fatal("no default set: want the public-only policy")
	}
	p := mustPolicy(t, []string{"10.0.0.0/8"}, nil)
	SetDefault(p)
	t.Cleanup(func() { SetDefault(nil) })
	if Default() != p {
		t.Fatal("SetDefault not used")
	}
}

// Every refusal of the policy is PermissionDenied, so a retry loop does not
// knock on a refused address again and again: the loopback service, a plain
// HTTP request and a redirect loop, each performed for real.
func TestRefusalsArePermissionDenied(t *testing.T) {
	s := newStub(t, true, nil)
	loop := newStub(t, true, func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	p := mustPolicy(t, []string{"localhost:" + loop.port()}, nil)
	trust(p, s)
	p.Transport().(*transport).base.TLSClientConfig.ServerName = "example.com" // in the test certificate
	for _, url := range []string{
		"https://127.0.0.1:" + s.port() + "/v2/",
		"http://127.0.0.1:" + s.port() + "/v2/",
		"https://localhost:" + loop.port() + "/loop",
	} {
		_, err := get(t, p.Client(), url)
		if err == nil {
			t.Fatalf("GET %s succeeded", url)
		}
		if c := errdefs.CategoryOf(err); c != errdefs.CategoryPermissionDenied || errdefs.Retryable(err) {
			t.Errorf("GET %s: %v is %s (retryable %v), want permission denied", url, err, c, errdefs.Retryable(err))
		}
	}
	if n := s.conns.Load(); n != 0 {
		t.Fatalf("the refused service saw %d connections", n)
	}
}
