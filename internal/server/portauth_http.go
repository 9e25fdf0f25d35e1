package server

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// Browser access to ports: the runner's proxy sends a browser without a
// valid port cookie to /auth/port; that needs the server's login cookie
// (from /login, where the user pastes a personal access token), checks the
// sharing rules, and sends the browser back to the proxy's /__cove/auth with
// a port session token scoped to one environment and port.
//
// A port token is only minted for a deliberate top-level page load
// (portauth_intent.go): a browser's Fetch Metadata must say so, and a
// client that sends none must submit a form carrying a token bound to its
// login. The environment is named as the proxy URL named it: an id works
// for everyone the port's sharing allows, a name only among the logged-in
// user's own environments.

const sessionCookie = "cove_session"

func (s *Server) registerPortAuth(mux *http.ServeMux) {
	mux.HandleFunc("GET /login", s.loginForm)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("GET /auth/port", s.authPort)
	mux.HandleFunc("POST /auth/port", s.authPortConfirm)
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>cove: log in</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:4em auto">
<h1>Log in to cove</h1>
{{if .Error}}<p style="color:#b00">{{.Error}}</p>{{end}}
<form method="post" action="login">
<p><label>Personal access token<br><input type="password" name="token" size="48" autofocus required></label></p>
<p style="color:#555">Create one with <code>cove token create</code>, or use the one in ~/.config/cove/config.json.</p>
<input type="hidden" name="next" value="{{.Next}}">
<p><button type="submit">Log in</button></p>
</form></body></html>
`))

func writePage(w http.ResponseWriter, status int, next, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	_ = loginPage.Execute(w, struct{ Next, Error string }{next, msg})
}

func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = fmt.Fprintln(w, msg)
}

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	writePage(w, http.StatusOK, r.URL.Query().Get("next"), "")
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	// Refuse cross-site posts (login CSRF) when the browser says where from.
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		if u, err := url.Parse(o); err != nil || u.Host != r.Host {
			writeText(w, http.StatusForbidden, "cross-site login refused")
			return
		}
	}
	next := r.PostFormValue("next")
	p, err := s.resolveToken(r.Context(), strings.TrimSpace(r.PostFormValue("token")))
	if err != nil || p.user == nil {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Error("login: resolve token", "err", err)
		}
		writePage(w, http.StatusUnauthorized, next, "That token is invalid or expired.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.issueSession(p), Path: "/",
		MaxAge: int(sessionTTL.Seconds()), HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: r.TLS != nil || strings.HasPrefix(s.cfg.PublicURL, "https://")})
	s.log.Info("browser login", "user", p.user.Name)
	if target, ok := s.localRedirect(r, next); ok {
		http.Redirect(w, r, target, http.StatusSeeOther)
		return
	}
	writeText(w, http.StatusOK, "Logged in as "+p.user.Name+".")
}

// localRedirect returns next if it points at this server: a relative path
// (not "//host", which browsers treat as another host) or an absolute URL
// on the server's public URL.
func (s *Server) localRedirect(r *http.Request, next string) (string, bool) {
	if next == "" || strings.ContainsAny(next, "\\\r\n\t") {
		return "", false
	}
	u, err := url.Parse(next)
	if err != nil {
		return "", false
	}
	if u.Scheme == "" && u.Host == "" && u.User == nil {
		if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") {
			return "", false
		}
		return next, true
	}
	base, err := url.Parse(s.publicURL(r))
	if err != nil || u.Scheme != base.Scheme || u.Host != base.Host || u.User != nil {
		return "", false
	}
	return next, true
}

// publicURL is the server's external base URL, without a trailing slash.
func (s *Server) publicURL(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return strings.TrimSuffix(s.cfg.PublicURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// authPort issues a port session token to the logged-in browser user and
// sends the browser to the proxy of the runner the environment runs on.
func (s *Server) authPort(w http.ResponseWriter, r *http.Request) {
	fetchMeta, navigation := fetchMetadata(r)
	if fetchMeta && !navigation {
		// An <img>, <iframe>, fetch() or <script> pointing here, from any
		// page: no token, and no redirect to follow.
		writeText(w, http.StatusForbidden, "Refused: open this link as a page, not from inside another page.")
		return
	}
	q := r.URL.Query()
	user, session, ok := s.portAuthUser(w, r)
	if !ok {
		return
	}
	g, ok := s.portGrant(w, r, user, q.Get("env"), q.Get("port"), q.Get("return"))
	if !ok {
		return
	}
	if !fetchMeta {
		// No Fetch Metadata (an older browser, curl): ask for a click on a
		// form only this login's pages can fill in.
		writeConfirmPage(w, g, s.csrfToken(session))
		return
	}
	s.issuePortRedirect(w, r, user, g)
}

// authPortConfirm is the form on the page authPort shows to clients
// without Fetch Metadata.
func (s *Server) authPortConfirm(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if fetchMeta, navigation := fetchMetadata(r); (fetchMeta && !navigation) || !sameOrigin(r) {
		writeText(w, http.StatusForbidden, "Refused: cross-site request.")
		return
	}
	user, session, ok := s.portAuthUser(w, r)
	if !ok {
		return
	}
	if !s.validCSRF(session, r.PostFormValue("csrf")) {
		writeText(w, http.StatusForbidden, "Refused: this form is stale or was not made for your login; open the port's URL again.")
		return
	}
	g, ok := s.portGrant(w, r, user, r.PostFormValue("env"), r.PostFormValue("port"), r.PostFormValue("return"))
	if !ok {
		return
	}
	s.issuePortRedirect(w, r, user, g)
}

// portAuthUser returns the logged-in user and their session cookie, or
// answers the request (login redirect, error) and returns false.
func (s *Server) portAuthUser(w http.ResponseWriter, r *http.Request) (store.User, string, bool) {
	var uid, session string
	if c, err := r.Cookie(sessionCookie); err == nil {
		if uid, _ = s.verifySession(r.Context(), c.Value); uid != "" {
			session = c.Value
		}
	}
	if uid == "" {
		next := "/auth/port?" + r.URL.RawQuery
		if r.Method == http.MethodPost {
			next = "/auth/port?" + url.Values{"env": {r.PostFormValue("env")}, "port": {r.PostFormValue("port")},
				"return": {r.PostFormValue("return")}}.Encode()
		}
		status := http.StatusFound
		if r.Method == http.MethodPost {
			status = http.StatusSeeOther
		}
		http.Redirect(w, r, strings.TrimSuffix(s.cfg.PublicURL, "/")+"/login?next="+url.QueryEscape(next), status)
		return store.User{}, "", false
	}
	user, err := s.store.GetUser(r.Context(), uid)
	if errors.Is(err, store.ErrNotFound) {
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: "/", MaxAge: -1})
		writeText(w, http.StatusForbidden, "unknown user: log in again")
		return store.User{}, "", false
	}
	if err != nil {
		s.log.Error("auth port: user", "err", err)
		writeText(w, http.StatusInternalServerError, "internal error")
		return store.User{}, "", false
	}
	return user, session, true
}

// portGrant is a checked request for a port token.
type portGrant struct {
	ref    string // the environment as the URL named it
	env    *covev1.Environment
	port   int
	ret    string // the proxy URL to return to
	origin string // its scheme://host
}

// portGrant checks that user may reach port of the environment ref names,
// and that ret is that port's URL on the environment's runner; otherwise
// it answers the request and returns false.
func (s *Server) portGrant(w http.ResponseWriter, r *http.Request, user store.User, ref, portStr, ret string) (portGrant, bool) {
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		writeText(w, http.StatusBadRequest, "invalid port")
		return portGrant{}, false
	}
	env, err := s.portEnvironment(r.Context(), user, ref)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Error("auth port: environment", "err", err)
			writeText(w, http.StatusInternalServerError, "internal error")
			return portGrant{}, false
		}
		writeText(w, http.StatusNotFound, fmt.Sprintf("No environment %q found. Names work for your own environments only; "+
			"for someone else's, open the URL from their `cove ports list` (it has the environment's id).", ref))
		return portGrant{}, false
	}
	if ok, reason := userMayAccess(env, port, &user); !ok || env.GetSpec().GetDesiredPhase() == phaseDeleted {
		if reason == "" {
			reason = "environment is being deleted"
		}
		// Reached by id (which the user holds) or by their own name: the
		// reason tells them nothing about anyone else's environments.
		writeText(w, http.StatusForbidden, "Access denied: "+reason+".")
		return portGrant{}, false
	}
	origin, ok := s.proxyOrigin(r, env, ref, port, ret)
	if !ok {
		writeText(w, http.StatusBadRequest, "return URL is not on this environment's port proxy")
		return portGrant{}, false
	}
	return portGrant{ref: ref, env: env, port: port, ret: ret, origin: origin}, true
}

// portEnvironment finds the environment a proxy URL names: by id for
// anyone (the sharing rules decide what they may reach), by name only
// among user's own environments, so that nobody learns another user's
// environment (or its id) from its name.
func (s *Server) portEnvironment(ctx context.Context, user store.User, ref string) (*covev1.Environment, error) {
	if ref == "" {
		return nil, store.ErrNotFound
	}
	env, err := s.store.GetEnvironment(ctx, ref)
	if !errors.Is(err, store.ErrNotFound) {
		return env, err
	}
	return s.store.GetEnvironmentByName(ctx, user.ID, ref)
}

// issuePortRedirect mints the port token and sends the browser to the
// proxy's /__cove/auth.
func (s *Server) issuePortRedirect(w http.ResponseWriter, r *http.Request, user store.User, g portGrant) {
	tok := s.IssuePortToken(user.ID, g.env.Id, g.port)
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Cache-Control", "no-store")
	s.log.Info("port token issued", "env", g.env.Id, "port", g.port, "user", user.Name)
	status := http.StatusFound
	if r.Method == http.MethodPost {
		status = http.StatusSeeOther
	}
	http.Redirect(w, r, g.origin+"/__cove/auth?token="+url.QueryEscape(tok)+"&return="+url.QueryEscape(g.ret), status)
}

// proxyOrigin checks that ret is the URL of port of env, named ref, on the
// proxy of env's runner and returns its origin (scheme://host). Path form
// URLs are "/p/<ref>/<port>/..." on the proxy URL's host; host form URLs
// live on "<port>--<ref>.<proxy host>", the runner's wildcard domain being
// its proxy URL's host name.
func (s *Server) proxyOrigin(r *http.Request, env *covev1.Environment, ref string, port int, ret string) (string, bool) {
	rid := env.GetMetadata().GetRunnerId()
	if rid == "" || ret == "" {
		return "", false
	}
	rn, err := s.store.GetRunner(r.Context(), rid)
	if err != nil {
		return "", false
	}
	proxy, err := url.Parse(rn.Capabilities.GetProxyUrl())
	if err != nil || proxy.Host == "" || (proxy.Scheme != "http" && proxy.Scheme != "https") {
		return "", false
	}
	u, err := url.Parse(ret)
	if err != nil || u.Scheme != proxy.Scheme || u.User != nil || u.Opaque != "" || strings.ContainsAny(ret, "\\\r\n\t") {
		return "", false
	}
	if u.Host == proxy.Host {
		prefix := "/p/" + ref + "/" + strconv.Itoa(port) + "/"
		if !strings.HasPrefix(u.EscapedPath(), prefix) {
			return "", false
		}
	} else {
		label, rest, ok := strings.Cut(u.Hostname(), ".")
		p, e, ok2 := strings.Cut(label, "--")
		if !ok || !ok2 || rest != proxy.Hostname() || u.Port() != proxy.Port() || p != strconv.Itoa(port) ||
			!strings.EqualFold(e, ref) {
			return "", false
		}
	}
	return u.Scheme + "://" + u.Host, true
}
