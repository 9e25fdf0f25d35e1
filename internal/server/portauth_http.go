package server

import (
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

const sessionCookie = "cove_session"

func (s *Server) registerPortAuth(mux *http.ServeMux) {
	mux.HandleFunc("GET /login", s.loginForm)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("GET /auth/port", s.authPort)
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
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.issueSession(p.user.ID), Path: "/",
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
	ctx := r.Context()
	q := r.URL.Query()
	var uid string
	if c, err := r.Cookie(sessionCookie); err == nil {
		uid, _ = s.verifySession(c.Value)
	}
	if uid == "" {
		next := "/auth/port?" + r.URL.RawQuery
		http.Redirect(w, r, strings.TrimSuffix(s.cfg.PublicURL, "/")+"/login?next="+url.QueryEscape(next), http.StatusFound)
		return
	}
	user, err := s.store.GetUser(ctx, uid)
	if errors.Is(err, store.ErrNotFound) {
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: "/", MaxAge: -1})
		writeText(w, http.StatusForbidden, "unknown user: log in again")
		return
	}
	if err != nil {
		s.log.Error("auth port: user", "err", err)
		writeText(w, http.StatusInternalServerError, "internal error")
		return
	}
	port, err := strconv.Atoi(q.Get("port"))
	if err != nil || port < 1 || port > 65535 {
		writeText(w, http.StatusBadRequest, "invalid port")
		return
	}
	env, err := s.store.GetEnvironment(ctx, q.Get("env"))
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Error("auth port: environment", "err", err)
		}
		writeText(w, http.StatusNotFound, "environment not found")
		return
	}
	if ok, reason := userMayAccess(env, port, &user); !ok || env.GetSpec().GetDesiredPhase() == phaseDeleted {
		if reason == "" {
			reason = "environment is being deleted"
		}
		// The same answer for missing and forbidden would hide nothing
		// here: the proxy already told the browser the environment exists.
		writeText(w, http.StatusForbidden, "Access denied: "+reason+".")
		return
	}
	ret := q.Get("return")
	origin, ok := s.proxyOrigin(r, env, port, ret)
	if !ok {
		writeText(w, http.StatusBadRequest, "return URL is not on this environment's port proxy")
		return
	}
	tok := s.IssuePortToken(user.ID, env.Id, port)
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Cache-Control", "no-store")
	s.log.Info("port token issued", "env", env.Id, "port", port, "user", user.Name)
	http.Redirect(w, r, origin+"/__cove/auth?token="+url.QueryEscape(tok)+"&return="+url.QueryEscape(ret), http.StatusFound)
}

// proxyOrigin checks that ret is a URL on the proxy of env's runner and
// returns its origin (scheme://host). Path form URLs live on the proxy
// URL's host; host form URLs on "<port>--<env>.<proxy host>", the runner's
// wildcard domain being its proxy URL's host name.
func (s *Server) proxyOrigin(r *http.Request, env *covev1.Environment, port int, ret string) (string, bool) {
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
	if u.Host != proxy.Host {
		label, rest, ok := strings.Cut(u.Hostname(), ".")
		p, e, ok2 := strings.Cut(label, "--")
		if !ok || !ok2 || rest != proxy.Hostname() || u.Port() != proxy.Port() || p != strconv.Itoa(port) ||
			(e != env.Id && e != env.GetMetadata().GetName()) {
			return "", false
		}
	}
	return u.Scheme + "://" + u.Host, true
}
