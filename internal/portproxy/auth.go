package portproxy

import (
	"crypto/sha256"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// requestToken returns the cove credential a request carries: a bearer
// token of cove's kinds, else the port session cookie.
func requestToken(r *http.Request) string {
	if tok, ok := bearerToken(r); ok {
		return tok
	}
	if c, err := r.Cookie(CookieName); err == nil {
		return c.Value
	}
	return ""
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	if strings.HasPrefix(tok, prefixPAT) || strings.HasPrefix(tok, prefixPort) {
		return tok, true
	}
	return "", false
}

// authorize answers the request itself (redirect, 401, 403, 502) and
// returns false unless it may go through.
func (p *proxy) authorize(w http.ResponseWriter, r *http.Request, t Target, rt route) bool {
	tok := requestToken(r)
	allowed, ok := p.cache.get(t.EnvID, rt.port, tok)
	if !ok {
		var userID string
		var cacheFor time.Duration
		var err error
		allowed, userID, cacheFor, err = p.cfg.Authorizer.Authorize(r.Context(), t.EnvID, rt.port, tok)
		if err != nil {
			p.log.Error("port proxy: authorize", "env", t.EnvID, "port", rt.port, "err", err)
			httpError(w, http.StatusBadGateway, "cannot check access right now; try again")
			return false
		}
		p.log.Debug("port proxy: authorized", "env", t.EnvID, "port", rt.port, "allowed", allowed, "user", userID)
		p.cache.put(t.EnvID, rt.port, tok, allowed, cacheFor)
	}
	if allowed {
		return true
	}
	if isBrowser(r) && p.cfg.ServerURL != "" {
		q := url.Values{"env": {t.EnvID}, "port": {strconv.Itoa(rt.port)}, "return": {requestURL(r)}}
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, p.cfg.ServerURL+"/auth/port?"+q.Encode(), http.StatusFound)
		return false
	}
	if tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cove"`)
		httpError(w, http.StatusUnauthorized, "this port is not public: send a cove token (Authorization: Bearer ...)")
		return false
	}
	httpError(w, http.StatusForbidden, "access to this port is denied")
	return false
}

// isBrowser tells page navigations, which can follow a login redirect,
// from API calls and scripts, which get a status code.
func isBrowser(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		strings.Contains(r.Header.Get("Accept"), "text/html") && r.Header.Get("Upgrade") == ""
}

// requestURL is the URL the browser asked for. Behind a TLS-terminating
// reverse proxy the scheme comes from X-Forwarded-Proto (the server only
// accepts return URLs on the runner's advertised proxy URL, so a forged
// header gains nothing).
func requestURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
		scheme = p
	}
	return scheme + "://" + r.Host + r.URL.RequestURI()
}

// serveAuth takes a port session token from the server's redirect, stores
// it in a cookie scoped to the port and sends the browser on.
func (p *proxy) serveAuth(w http.ResponseWriter, r *http.Request, hostForm bool) {
	q := r.URL.Query()
	tok := q.Get("token")
	if !strings.HasPrefix(tok, prefixPort) {
		httpError(w, http.StatusBadRequest, "missing or malformed token")
		return
	}
	ret, err := url.Parse(q.Get("return"))
	if err != nil || ret.User != nil || ret.Opaque != "" || strings.ContainsAny(q.Get("return"), "\\\r\n\t") ||
		(ret.Host != "" && ret.Host != r.Host) || (ret.Host == "" && ret.Scheme != "") {
		httpError(w, http.StatusBadRequest, "return URL must be on this host")
		return
	}
	rt := route{}
	if !hostForm {
		var ok bool
		rt, ok = parsePath(ret.EscapedPath())
		if !ok {
			httpError(w, http.StatusBadRequest, "return URL is not a port URL")
			return
		}
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: tok, Path: rt.cookiePath(),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	dest := ret.EscapedPath()
	if dest == "" {
		dest = "/"
	}
	if ret.RawQuery != "" {
		dest += "?" + ret.RawQuery
	}
	http.Redirect(w, r, dest, http.StatusFound)
}

// decisionCache remembers Authorize answers per (environment, port, token).
type decisionCache struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[cacheKey]cacheEntry
}

type cacheKey struct {
	env   string
	port  int
	token [32]byte
}

type cacheEntry struct {
	allowed bool
	until   time.Time
}

const maxCacheEntries = 10000

func newDecisionCache(now func() time.Time) *decisionCache {
	return &decisionCache{now: now, m: map[cacheKey]cacheEntry{}}
}

func (c *decisionCache) key(env string, port int, tok string) cacheKey {
	return cacheKey{env: env, port: port, token: sha256.Sum256([]byte(tok))}
}

func (c *decisionCache) get(env string, port int, tok string) (allowed, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[c.key(env, port, tok)]
	if !ok || !c.now().Before(e.until) {
		return false, false
	}
	return e.allowed, true
}

func (c *decisionCache) put(env string, port int, tok string, allowed bool, d time.Duration) {
	if d <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if len(c.m) >= maxCacheEntries {
		for k, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= maxCacheEntries {
			clear(c.m)
		}
	}
	c.m[c.key(env, port, tok)] = cacheEntry{allowed: allowed, until: now.Add(d)}
}
