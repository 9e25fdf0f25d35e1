package portproxy

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
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

// deny answers a request that may not go through. The answer depends only
// on the request, never on whether the environment exists: browsers are
// sent to the server's login with the environment as the URL names it (an
// id the client already has, or a name the server resolves for the
// logged-in owner only), other clients get 401 without a credential and
// 403 with one.
func (p *proxy) deny(w http.ResponseWriter, r *http.Request, rt route, tok string) {
	if isBrowser(r) && p.cfg.ServerURL != "" {
		q := url.Values{"env": {rt.envRef}, "port": {strconv.Itoa(rt.port)}, "return": {requestURL(r)}}
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		http.Redirect(w, r, p.cfg.ServerURL+"/auth/port?"+q.Encode(), http.StatusFound)
		return
	}
	if tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cove"`)
		httpError(w, http.StatusUnauthorized, "this port is not public, or its environment is not running here: send a cove token (Authorization: Bearer ...)")
		return
	}
	httpError(w, http.StatusForbidden, denied)
}

// denied is the answer to a credential that may not reach a port, for
// whatever reason.
const denied = "access denied: the environment is not running on this runner, or this credential may not reach this port " +
	"(names work for your own environments only; use the URL from `cove ports list`)"

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
// it in a cookie scoped to the port and sends the browser on, if the token
// does reach that port. Otherwise it says so instead of sending the browser
// round the login again (a stopped environment would loop). hr is the
// request's host-form route, if hostForm.
func (p *proxy) serveAuth(w http.ResponseWriter, r *http.Request, hr route, hostForm bool) {
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
	rt := hr
	if !hostForm {
		var ok bool
		rt, ok = parsePath(ret.EscapedPath())
		if !ok {
			httpError(w, http.StatusBadRequest, "return URL is not a port URL")
			return
		}
	}
	if _, allowed, _, err := p.access(r.Context(), rt, tok); err != nil || !allowed {
		w.Header().Set("Referrer-Policy", "no-referrer")
		if err != nil {
			httpError(w, http.StatusBadGateway, "cannot check access right now; try again")
			return
		}
		httpError(w, http.StatusForbidden, denied)
		return
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
