// Package portproxy is the runner's HTTP(S) port proxy: it serves ports
// inside environments at https://RUNNER/p/<env>/<port>/... (path form) and,
// with a wildcard domain, at https://<port>--<env>.<domain>/... (host
// form), after the server authorizes each request (personal access token
// in an Authorization header, or a port session cookie a browser gets
// through the server's login). WebSockets and streaming responses pass
// through. The package knows nothing about runners: a Resolver finds the
// environment and how to dial into it, an Authorizer asks the server.
//
// Unauthenticated clients learn nothing: an environment that does not
// exist, is not running here, or is not theirs gets the same answer as a
// port they may not reach (resolve.go), and names resolve only for their
// owner. NewServer bounds what unauthenticated connections can hold
// (limits.go).
package portproxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Target is an environment running on this runner.
type Target struct {
	EnvID, OwnerID string
	// Dial connects to a TCP port inside the environment.
	Dial func(ctx context.Context, port int) (net.Conn, error)
	// HTTPS, if set, reports whether a port serves HTTPS
	// (devcontainer.json portsAttributes.protocol): the proxy then speaks
	// TLS to it. The certificate is not verified: it is the application's
	// own, usually self-signed, and the connection never leaves the
	// runner (it is dialled inside the environment, on its loopback).
	HTTPS func(port int) bool
}

// Resolver finds environments running here by id.
type Resolver interface {
	// Resolve returns the running environment with this id, or an error.
	// It must not match names: a name means different environments to
	// different users (see resolve.go).
	Resolve(ctx context.Context, id string) (Target, error)
}

// NameResolver is a Resolver that also lists environments by name. Names
// in URLs resolve only through it; with a Resolver that is not one, they
// never resolve.
type NameResolver interface {
	Resolver
	// Named returns the ids of the running environments here that have
	// this name, whoever owns them (names are unique per owner only).
	Named(ctx context.Context, name string) []string
}

// Authorizer decides whether a request carrying token (empty when
// anonymous) may reach port of environment envID, and for how long the
// answer may be reused.
type Authorizer interface {
	Authorize(ctx context.Context, envID string, port int, token string) (allowed bool, userID string, cacheFor time.Duration, err error)
}

// Config configures the proxy.
type Config struct {
	Resolver   Resolver
	Authorizer Authorizer
	// ServerURL is the server's external URL: browsers without a port
	// cookie are sent to its /auth/port.
	ServerURL string
	// Domain, if set, enables the host form <port>--<env>.<Domain>.
	Domain string
	// Activity, if set, is called for signed-in users' requests reaching
	// an environment (at most once a second per environment); anonymous
	// requests to public ports are not activity.
	Activity func(envID string, port int)
	Log      *slog.Logger
	Now      func() time.Time
}

// Names the proxy reserves.
const (
	// CookieName holds a port session token.
	CookieName = "cove_port_session"
	// AuthPath receives the browser back from the server's /auth/port.
	AuthPath = "/__cove/auth"
	// tokenPrefixes are cove's credentials; an Authorization header with
	// another kind is the application's own and passes through.
	prefixPAT  = "cove_pat_"
	prefixPort = "cove_port_"
)

type proxy struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	cache *decisionCache
	tr    *http.Transport
	tlsTr *http.Transport // for HTTPS ports

	mu         sync.Mutex
	lastActive map[string]time.Time
}

// New returns the proxy's handler.
func New(cfg Config) http.Handler {
	p := &proxy{cfg: cfg, log: cfg.Log, now: cfg.Now, lastActive: map[string]time.Time{}}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.cfg.Domain = strings.Trim(strings.ToLower(cfg.Domain), ".")
	p.cfg.ServerURL = strings.TrimSuffix(cfg.ServerURL, "/")
	p.cache = newDecisionCache(p.now)
	p.tr = newTransport()
	p.tlsTr = newTLSTransport()
	return p
}

// route is where a request goes.
type route struct {
	envRef string
	port   int
	prefix string // "/p/<env>/<port>" in path form, "" in host form
	rest   string // escaped path to send to the port
}

func (r route) cookiePath() string {
	if r.prefix == "" {
		return "/"
	}
	return r.prefix + "/"
}

// parseHost recognises the host form "<port>--<env>.<domain>".
func (p *proxy) parseHost(host string) (route, bool) {
	if p.cfg.Domain == "" {
		return route{}, false
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	label, ok := strings.CutSuffix(strings.ToLower(host), "."+p.cfg.Domain)
	if !ok || strings.Contains(label, ".") {
		return route{}, false
	}
	ps, env, ok := strings.Cut(label, "--")
	port, err := strconv.Atoi(ps)
	if !ok || err != nil || env == "" || port < 1 || port > 65535 || ps != strconv.Itoa(port) {
		return route{}, false
	}
	return route{envRef: env, port: port}, true
}

// parsePath recognises the path form "/p/<env>/<port>/rest" in an escaped
// path. ok with an empty rest means the trailing slash is missing.
func parsePath(escaped string) (route, bool) {
	s, ok := strings.CutPrefix(escaped, "/p/")
	if !ok {
		return route{}, false
	}
	env, s, ok := strings.Cut(s, "/")
	if !ok || env == "" {
		return route{}, false
	}
	ps, rest, _ := strings.Cut(s, "/")
	port, err := strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 || ps != strconv.Itoa(port) {
		return route{}, false
	}
	r := route{envRef: env, port: port, prefix: "/p/" + env + "/" + ps}
	if strings.HasPrefix(s, ps+"/") {
		r.rest = "/" + rest
	}
	return r, true
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hr, hostForm := p.parseHost(r.Host)
	if r.URL.Path == AuthPath {
		p.serveAuth(w, r, hr, hostForm)
		return
	}
	rt := hr
	if hostForm {
		rt.rest = r.URL.EscapedPath()
	} else {
		var ok bool
		rt, ok = parsePath(r.URL.EscapedPath())
		if !ok {
			httpError(w, http.StatusNotFound, "not found: ports are served at /p/<environment>/<port>/")
			return
		}
		if rt.rest == "" {
			u := rt.prefix + "/"
			if r.URL.RawQuery != "" {
				u += "?" + r.URL.RawQuery
			}
			http.Redirect(w, r, u, http.StatusMovedPermanently)
			return
		}
	}
	tok := requestToken(r)
	t, allowed, userID, err := p.access(r.Context(), rt, tok)
	if err != nil {
		httpError(w, http.StatusBadGateway, "cannot check access right now; try again")
		return
	}
	if !allowed {
		p.deny(w, r, rt, tok)
		return
	}
	authenticatedConn(r.Context())
	if userID != "" {
		// Only a signed-in user's request is use of the environment: an
		// anonymous one (a public port polled by a monitor, or by the
		// environment itself through a relay) does not hold off its
		// inactivity stop (review REV-11).
		p.activity(t.EnvID, rt.port)
	}
	p.forward(w, r, t, rt)
}

// activity reports use of an environment, at most once a second each.
func (p *proxy) activity(envID string, port int) {
	if p.cfg.Activity == nil {
		return
	}
	now := p.now()
	p.mu.Lock()
	last, seen := p.lastActive[envID]
	fire := !seen || now.Sub(last) >= time.Second
	if fire {
		p.lastActive[envID] = now
		if len(p.lastActive) > 4096 {
			for id, t := range p.lastActive {
				if now.Sub(t) > time.Minute {
					delete(p.lastActive, id)
				}
			}
		}
	}
	p.mu.Unlock()
	if fire {
		p.cfg.Activity(envID, port)
	}
}

func httpError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
}
