package server

import (
	"crypto/hmac"
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
)

// Port tokens are minted only for a deliberate top-level page load of
// /auth/port, never for a request another page makes on the user's behalf
// with their login cookie (SameSite=Lax sends it on same-site <img>,
// <iframe> and fetch requests; in the proxy's path form every port shares
// one origin, so a token minted that way would let one port's page read
// another's):
//
//   - A browser that sends Fetch Metadata (Sec-Fetch-Mode/-Dest, every
//     current browser) must say "navigate" to a "document": then the token
//     is minted at once, so following a port link just works. Anything
//     else (an image, a frame, a script's fetch) is refused.
//   - A client that sends none (an old browser, curl) gets a page with a
//     Continue button: a form POSTed back with a token derived from its
//     login cookie, which another site can neither read nor compute. The
//     page may not be framed.

// fetchMetadata reports whether r carries Fetch Metadata about its mode and
// destination, and whether it says r is a top-level page navigation.
func fetchMetadata(r *http.Request) (present, navigation bool) {
	mode, dest := r.Header.Get("Sec-Fetch-Mode"), r.Header.Get("Sec-Fetch-Dest")
	if mode == "" && dest == "" {
		return false, false
	}
	return true, mode == "navigate" && dest == "document"
}

// sameOrigin refuses a request whose Origin header names another host.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

const csrfPrefix = "cove_csrf_"

// csrfToken is the confirmation form's token for a login session: a MAC of
// the session cookie, which is HttpOnly and never leaves the server's
// origin.
func (s *Server) csrfToken(session string) string {
	return base64.RawURLEncoding.EncodeToString(s.mac(csrfPrefix, session))
}

func (s *Server) validCSRF(session, got string) bool {
	b, err := base64.RawURLEncoding.DecodeString(got)
	return err == nil && session != "" && hmac.Equal(b, s.mac(csrfPrefix, session))
}

var confirmPage = template.Must(template.New("confirm").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>cove: open port {{.Port}}</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:4em auto">
<h1>Open port {{.Port}} of {{.Env}}?</h1>
<p>You are about to open <code>{{.Return}}</code>.</p>
<form method="post" action="port">
<input type="hidden" name="env" value="{{.Env}}">
<input type="hidden" name="port" value="{{.Port}}">
<input type="hidden" name="return" value="{{.Return}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<p><button type="submit" autofocus>Continue</button></p>
</form></body></html>
`))

// writeConfirmPage asks a client without Fetch Metadata to confirm g.
func writeConfirmPage(w http.ResponseWriter, g portGrant, csrf string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "frame-ancestors 'none'; default-src 'none'; style-src 'unsafe-inline'")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(http.StatusOK)
	_ = confirmPage.Execute(w, struct{ Env, Port, Return, CSRF string }{g.ref, strconv.Itoa(g.port), g.ret, csrf})
}
