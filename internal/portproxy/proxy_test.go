package portproxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/portproxy"
	"golang.org/x/net/websocket"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// resolver knows one environment, "env1" named "demo", whose port 8080
// is a real HTTP server on loopback; other ports refuse connections.
type resolver struct{ backend string }

func (r resolver) Resolve(_ context.Context, id string) (portproxy.Target, error) {
	if id != "env1" {
		return portproxy.Target{}, errors.New("not running here")
	}
	return portproxy.Target{EnvID: "env1", OwnerID: "u-owner", Dial: func(ctx context.Context, port int) (net.Conn, error) {
		if port != 8080 {
			return nil, fmt.Errorf("connect to port %d: connection refused", port)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", r.backend)
	}}, nil
}

func (r resolver) Named(_ context.Context, name string) []string {
	if name == "demo" {
		return []string{"env1"}
	}
	return nil
}

// authorizer allows "cove_pat_good" and "cove_port_good" and counts calls.
type authorizer struct {
	mu       sync.Mutex
	calls    int
	cacheFor time.Duration
	seen     []string
	public   bool // a public port: anyone is let in, anonymously
}

func (a *authorizer) Authorize(_ context.Context, envID string, port int, tok string) (bool, string, time.Duration, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	a.seen = append(a.seen, fmt.Sprintf("%s/%d/%s", envID, port, tok))
	if tok == "cove_pat_good" || tok == "cove_port_good" {
		return true, "u-owner", a.cacheFor, nil
	}
	if a.public {
		return true, "", 0, nil
	}
	return false, "", 0, nil
}

func (a *authorizer) count() int { a.mu.Lock(); defer a.mu.Unlock(); return a.calls }

// seenReq is what the backend saw.
type seenReq struct {
	Path, RawQuery, Host string
	Header               http.Header
}

type fixture struct {
	proxyURL string
	auth     *authorizer
	clock    *clock
	release  chan struct{}
	mu       sync.Mutex
	activity []string
}

func (f *fixture) activities() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.activity) }

func newFixture(t *testing.T, domain string) *fixture {
	t.Helper()
	f := &fixture{auth: &authorizer{}, clock: &clock{t: time.Unix(1_700_000_000, 0)}, release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo/", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(seenReq{Path: r.URL.Path, RawQuery: r.URL.RawQuery, Host: r.Host, Header: r.Header})
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/login", http.StatusFound) })
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-f.release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second\n")
	})
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { _, _ = io.Copy(c, c) }))
	backend := httptest.NewServer(mux)
	t.Cleanup(backend.Close)

	h := portproxy.New(portproxy.Config{
		Resolver:   resolver{backend: backend.Listener.Addr().String()},
		Authorizer: f.auth,
		ServerURL:  "http://server.test/",
		Domain:     domain,
		Activity: func(id string, _ int) {
			f.mu.Lock()
			f.activity = append(f.activity, id)
			f.mu.Unlock()
		},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: f.clock.Now,
	})
	px := httptest.NewServer(h)
	t.Cleanup(px.Close)
	f.proxyURL = px.URL
	return f
}

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func do(t *testing.T, method, u string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func decodeSeen(t *testing.T, resp *http.Response) seenReq {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var s seenReq
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPathFormForwardsAndStripsCredentials(t *testing.T) {
	f := newFixture(t, "")
	host := strings.TrimPrefix(f.proxyURL, "http://")
	resp := do(t, "GET", f.proxyURL+"/p/demo/8080/echo/a%2Fb?x=1", map[string]string{
		"Authorization":   "Bearer cove_pat_good",
		"Cookie":          "a=1; cove_port_session=zzz; b=2; cove_session=s",
		"X-Forwarded-For": "6.6.6.6",
	})
	s := decodeSeen(t, resp)
	if s.Path != "/echo/a/b" || s.RawQuery != "x=1" || s.Host != "localhost:8080" {
		t.Errorf("backend saw path %q query %q host %q", s.Path, s.RawQuery, s.Host)
	}
	if s.Header.Get("Authorization") != "" || s.Header.Get("Cookie") != "a=1; b=2" {
		t.Errorf("credentials reached the backend: auth %q cookie %q", s.Header.Get("Authorization"), s.Header.Get("Cookie"))
	}
	if got := s.Header.Get("X-Forwarded-Prefix"); got != "/p/demo/8080" {
		t.Errorf("X-Forwarded-Prefix %q", got)
	}
	if s.Header.Get("X-Forwarded-Host") != host || s.Header.Get("X-Forwarded-Proto") != "http" || s.Header.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Errorf("forwarded headers: %v", s.Header)
	}
	if got := f.auth.seen; len(got) != 1 || got[0] != "env1/8080/cove_pat_good" {
		t.Errorf("authorizer saw %v", got)
	}

	// The application's own Authorization passes through.
	s = decodeSeen(t, do(t, "GET", f.proxyURL+"/p/env1/8080/echo/", map[string]string{
		"Authorization": "Basic dTpw", "Cookie": "cove_port_session=cove_port_good"}))
	if s.Header.Get("Authorization") != "Basic dTpw" || s.Header.Get("Cookie") != "" {
		t.Errorf("app credentials: %v", s.Header)
	}

	// Missing slash, unknown environment, closed port, root-relative redirect.
	if r := do(t, "GET", f.proxyURL+"/p/demo/8080?q=1", nil); r.StatusCode != http.StatusMovedPermanently || r.Header.Get("Location") != "/p/demo/8080/?q=1" {
		t.Errorf("no slash: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if r := do(t, "GET", f.proxyURL+"/p/nope/8080/", map[string]string{"Authorization": "Bearer cove_pat_good"}); r.StatusCode != http.StatusForbidden {
		t.Errorf("unknown env: %d", r.StatusCode)
	}
	if r := do(t, "GET", f.proxyURL+"/p/demo/9/", map[string]string{"Authorization": "Bearer cove_pat_good"}); r.StatusCode != http.StatusBadGateway {
		t.Errorf("closed port: %d", r.StatusCode)
	}
	if r := do(t, "GET", f.proxyURL+"/p/demo/8080/redirect", map[string]string{"Authorization": "Bearer cove_pat_good"}); r.Header.Get("Location") != "/p/demo/8080/login" {
		t.Errorf("redirect Location %q", r.Header.Get("Location"))
	}
	for _, bad := range []string{"/", "/p/demo/0/", "/p/demo/65536/", "/p/demo/08080/", "/p//8080/"} {
		if r := do(t, "GET", f.proxyURL+bad, map[string]string{"Authorization": "Bearer cove_pat_good"}); r.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d", bad, r.StatusCode)
		}
	}
}

func TestHostForm(t *testing.T) {
	f := newFixture(t, "ports.test")
	s := decodeSeen(t, do(t, "GET", f.proxyURL+"/echo/x?y=2", map[string]string{
		"Host": "8080--demo.ports.test", "Authorization": "Bearer cove_pat_good"}))
	if s.Path != "/echo/x" || s.RawQuery != "y=2" || s.Header.Get("X-Forwarded-Prefix") != "" ||
		s.Header.Get("X-Forwarded-Host") != "8080--demo.ports.test" {
		t.Errorf("host form: %+v", s)
	}
	// The path form still works on the proxy's own host.
	decodeSeen(t, do(t, "GET", f.proxyURL+"/p/demo/8080/echo/", map[string]string{"Authorization": "Bearer cove_pat_good"}))
	// A host-form browser redirect returns to the host-form URL.
	r := do(t, "GET", f.proxyURL+"/x", map[string]string{"Host": "8080--demo.ports.test", "Accept": "text/html"})
	loc, _ := url.Parse(r.Header.Get("Location"))
	if r.StatusCode != http.StatusFound || loc.Query().Get("return") != "http://8080--demo.ports.test/x" {
		t.Errorf("host form browser redirect: %d %v", r.StatusCode, loc)
	}
}

func TestUnauthorized(t *testing.T) {
	f := newFixture(t, "")
	host := strings.TrimPrefix(f.proxyURL, "http://")
	html := "text/html,application/xhtml+xml,*/*;q=0.8"
	for _, tc := range []struct {
		name, method, tok, accept string
		want                      int
	}{
		{"browser without token", "GET", "", html, http.StatusFound},
		{"browser with bad cookie", "GET", "cookie", html, http.StatusFound},
		{"api without token", "GET", "", "application/json", http.StatusUnauthorized},
		{"api with bad token", "GET", "cove_pat_bad", "*/*", http.StatusForbidden},
		{"browser form post", "POST", "", html, http.StatusUnauthorized},
	} {
		h := map[string]string{"Accept": tc.accept}
		switch tc.tok {
		case "":
		case "cookie":
			h["Cookie"] = "cove_port_session=cove_port_expired"
		default:
			h["Authorization"] = "Bearer " + tc.tok
		}
		r := do(t, tc.method, f.proxyURL+"/p/demo/8080/echo/?a=b", h)
		if r.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, r.StatusCode, tc.want)
			continue
		}
		if tc.want == http.StatusFound {
			loc, err := url.Parse(r.Header.Get("Location"))
			q := loc.Query()
			if err != nil || loc.Host != "server.test" || loc.Path != "/auth/port" || q.Get("env") != "demo" || q.Get("port") != "8080" ||
				q.Get("return") != "http://"+host+"/p/demo/8080/echo/?a=b" {
				t.Errorf("%s: Location %v", tc.name, loc)
			}
		}
	}
	if f.activities() != 0 {
		t.Errorf("refused requests counted as activity")
	}
}

func TestCookieFlow(t *testing.T) {
	f := newFixture(t, "")
	host := strings.TrimPrefix(f.proxyURL, "http://")
	r := do(t, "GET", f.proxyURL+"/__cove/auth?token=cove_port_good&return="+url.QueryEscape("http://"+host+"/p/demo/8080/echo/?q=1"), nil)
	if r.StatusCode != http.StatusFound || r.Header.Get("Location") != "/p/demo/8080/echo/?q=1" {
		t.Fatalf("auth: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	var c *http.Cookie
	for _, ck := range r.Cookies() {
		if ck.Name == portproxy.CookieName {
			c = ck
		}
	}
	if c == nil || c.Value != "cove_port_good" || c.Path != "/p/demo/8080/" || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
		t.Fatalf("cookie: %+v", c)
	}

	// A browser with a jar goes through and the cookie is stripped.
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}
	resp, err := cl.Get(f.proxyURL + "/__cove/auth?token=cove_port_good&return=" + url.QueryEscape("/p/demo/8080/echo/"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	s := decodeSeen(t, resp)
	if s.Path != "/echo/" || s.Header.Get("Cookie") != "" || strings.Contains(fmt.Sprint(s.Header), "cove_port_good") {
		t.Errorf("after login: %+v", s)
	}

	for _, ret := range []string{"http://evil.test/p/demo/8080/", "//evil.test/p/demo/8080/", "/not-a-port", "javascript:alert(1)", `/\evil.test`} {
		r := do(t, "GET", f.proxyURL+"/__cove/auth?token=cove_port_good&return="+url.QueryEscape(ret), nil)
		if r.StatusCode != http.StatusBadRequest || r.Header.Get("Set-Cookie") != "" {
			t.Errorf("return %q: %d %q", ret, r.StatusCode, r.Header.Get("Location"))
		}
	}
	if r := do(t, "GET", f.proxyURL+"/__cove/auth?token=cove_pat_good&return=/p/demo/8080/", nil); r.StatusCode != http.StatusBadRequest {
		t.Errorf("personal token in a cookie: %d", r.StatusCode)
	}

	// Host form: the cookie covers the whole host.
	f2 := newFixture(t, "ports.test")
	r = do(t, "GET", f2.proxyURL+"/__cove/auth?token=cove_port_good&return="+url.QueryEscape("http://8080--demo.ports.test/a?b=c"),
		map[string]string{"Host": "8080--demo.ports.test"})
	if r.StatusCode != http.StatusFound || r.Header.Get("Location") != "/a?b=c" || len(r.Cookies()) != 1 || r.Cookies()[0].Path != "/" {
		t.Errorf("host form auth: %d %q %v", r.StatusCode, r.Header.Get("Location"), r.Cookies())
	}
}

func TestCacheAndActivity(t *testing.T) {
	f := newFixture(t, "")
	f.auth.cacheFor = time.Minute
	get := func(tok string) int {
		r := do(t, "GET", f.proxyURL+"/p/env1/8080/echo/", map[string]string{"Authorization": "Bearer " + tok})
		io.Copy(io.Discard, r.Body)
		return r.StatusCode
	}
	for range 3 {
		if st := get("cove_pat_good"); st != http.StatusOK {
			t.Fatalf("status %d", st)
		}
	}
	if n := f.auth.count(); n != 1 {
		t.Errorf("authorize calls with a cached answer: %d", n)
	}
	if n := f.activities(); n != 1 {
		t.Errorf("activity within a second: %d calls, want 1", n)
	}
	// Denials are not cached (cacheFor 0); another token is another key.
	get("cove_pat_bad")
	get("cove_pat_bad")
	get("cove_port_good")
	if n := f.auth.count(); n != 4 {
		t.Errorf("authorize calls: %d, want 4", n)
	}
	f.clock.Add(2 * time.Minute)
	get("cove_pat_good")
	if n := f.auth.count(); n != 5 {
		t.Errorf("expired cache entry reused: %d calls", n)
	}
	if n := f.activities(); n != 2 || f.activity[1] != "env1" {
		t.Errorf("activity after a pause: %v", f.activity)
	}
}

// TestAnonymousRequestsAreNotActivity (review REV-11): requests to a
// public port without credentials (a monitor polling it, or the
// environment itself through a relay) reach the application but do not
// count as use: they never hold off the inactivity stop. A signed-in
// user's request does.
func TestAnonymousRequestsAreNotActivity(t *testing.T) {
	f := newFixture(t, "")
	f.auth.public = true
	for range 5 {
		f.clock.Add(2 * time.Second) // past the once-a-second bound each time
		r := do(t, "GET", f.proxyURL+"/p/env1/8080/echo/", nil)
		io.Copy(io.Discard, r.Body)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("anonymous request to a public port: status %d", r.StatusCode)
		}
	}
	if n := f.activities(); n != 0 {
		t.Errorf("anonymous requests counted as activity %d times; want none", n)
	}
	r := do(t, "GET", f.proxyURL+"/p/env1/8080/echo/", map[string]string{"Authorization": "Bearer cove_pat_good"})
	io.Copy(io.Discard, r.Body)
	if r.StatusCode != http.StatusOK || f.activities() != 1 {
		t.Errorf("signed-in request: status %d, %d activities; want 200 and 1", r.StatusCode, f.activities())
	}
}
