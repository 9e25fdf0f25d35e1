package server_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// login returns user's browser session cookie.
func (w *portWorld) login(t *testing.T, user string) *http.Cookie {
	t.Helper()
	resp, _ := postLogin(t, w.url, w.tok[user], "", "")
	return sessionCookie(t, resp)
}

// authPortURL is the URL the proxy sends a browser to for env (as the
// proxy URL named it) and port.
func (w *portWorld) authPortURL(env string, port int, ret string) string {
	return w.url + "/auth/port?" + url.Values{"env": {env}, "port": {strconv.Itoa(port)}, "return": {ret}}.Encode()
}

// mintedToken returns the port token in a response, if any is anywhere in
// it (headers or body).
func mintedToken(resp *http.Response, body string) string {
	re := regexp.MustCompile(`cove_port_[A-Za-z0-9_.%-]+`)
	for _, vs := range resp.Header {
		for _, v := range vs {
			if m := re.FindString(v); m != "" {
				return m
			}
		}
	}
	return re.FindString(body)
}

// TestAuthPortRefusesSubresourceRequests performs F13's demonstration: a
// page embeds /auth/port for the victim's private port as an image (or a
// frame, or a fetch); the victim's browser sends her login cookie along
// (SameSite=Lax allows it same-site). No port token is minted. A real
// page navigation still gets one at once.
func TestAuthPortRefusesSubresourceRequests(t *testing.T) {
	w := newPortWorld(t)
	alice := w.login(t, "alice")
	ret := testProxyURL + "/p/" + w.env.Id + "/8080/"
	u := w.authPortURL(w.env.Id, 8080, ret)
	for _, tc := range []struct{ name, mode, dest string }{
		{"img", "no-cors", "image"},
		{"iframe", "navigate", "iframe"},
		{"fetch", "cors", "empty"},
		{"script", "no-cors", "script"},
		{"object", "navigate", "object"},
	} {
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Sec-Fetch-Site", "same-site")
		req.Header.Set("Sec-Fetch-Mode", tc.mode)
		req.Header.Set("Sec-Fetch-Dest", tc.dest)
		req.AddCookie(alice)
		resp, body := send(t, req)
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Location") != "" || mintedToken(resp, body) != "" {
			t.Errorf("%s: %d Location %q: a port token was minted for a subresource request", tc.name, resp.StatusCode, resp.Header.Get("Location"))
		}
	}

	// A top-level navigation mints at once.
	resp, body := nav(t, u, alice)
	tok := mintedToken(resp, body)
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), testProxyURL+"/__cove/auth?token=") || tok == "" {
		t.Fatalf("navigation: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	tok, _ = url.QueryUnescape(tok)
	if got := w.authorize(t, w.env.Id, 8080, tok); !got.Allowed || got.UserId != w.alice.ID {
		t.Fatalf("token from a navigation refused: %+v", got)
	}
}

// TestAuthPortConfirmationWithoutFetchMetadata: a client that sends no
// Fetch Metadata (curl, an old browser) gets a page, not a token, and only
// a POST carrying the CSRF token bound to its own login mints one.
func TestAuthPortConfirmationWithoutFetchMetadata(t *testing.T) {
	w := newPortWorld(t)
	w.share(t, w.env.Id, 8080, visOrg)
	alice, bob := w.login(t, "alice"), w.login(t, "bob")
	ret := testProxyURL + "/p/" + w.env.Id + "/8080/x?y=1"
	resp, body := get(t, w.authPortURL(w.env.Id, 8080, ret), alice)
	if resp.StatusCode != http.StatusOK || mintedToken(resp, body) != "" || resp.Header.Get("Location") != "" {
		t.Fatalf("GET without Fetch Metadata: %d %q: want a confirmation page without a token", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("confirmation page may be framed: %v", resp.Header)
	}
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	if m == nil || !strings.Contains(body, `action="port"`) {
		t.Fatalf("no form in the page:\n%s", body)
	}
	csrf := html.UnescapeString(m[1])

	post := func(cookie *http.Cookie, csrf string, hdr map[string]string) (*http.Response, string) {
		form := url.Values{"env": {w.env.Id}, "port": {"8080"}, "return": {ret}, "csrf": {csrf}}
		req, _ := http.NewRequest("POST", w.url+"/auth/port", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		return send(t, req)
	}
	for name, tc := range map[string]struct {
		cookie *http.Cookie
		csrf   string
		hdr    map[string]string
	}{
		"no csrf":                 {alice, "", nil},
		"forged csrf":             {alice, "AAAA" + csrf[4:], nil},
		"another login's csrf":    {bob, csrf, nil},
		"cross-site origin":       {alice, csrf, map[string]string{"Origin": "http://evil.test"}},
		"posted by a subresource": {alice, csrf, map[string]string{"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}},
	} {
		resp, body := post(tc.cookie, tc.csrf, tc.hdr)
		if resp.StatusCode != http.StatusForbidden || mintedToken(resp, body) != "" {
			t.Errorf("%s: %d %q: want 403 and no token", name, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	resp, body = post(alice, csrf, map[string]string{"Origin": w.url})
	tok, _ := url.QueryUnescape(mintedToken(resp, body))
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), testProxyURL+"/__cove/auth?") {
		t.Fatalf("confirmed: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if got := w.authorize(t, w.env.Id, 8080, tok); !got.Allowed || got.UserId != w.alice.ID {
		t.Fatalf("confirmed token refused: %+v", got)
	}
	// Without a login the POST goes to the login page, not a token.
	if resp, body := post(nil, csrf, nil); resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "/login?") || mintedToken(resp, body) != "" {
		t.Errorf("no login: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestAuthPortNamesResolveForTheirOwnerOnly (F10, F16): a name in a proxy
// URL means the logged-in user's own environment of that name. Bob (who
// may reach alice's port by id) learns nothing by name: the same answer as
// for a name nobody has. Carol naming her environment like alice's gets a
// token for hers, never for alice's; alice's name still means hers.
func TestAuthPortNamesResolveForTheirOwnerOnly(t *testing.T) {
	w := newPortWorld(t)
	w.share(t, w.env.Id, 8080, visOrg)
	alice, bob, carol := w.login(t, "alice"), w.login(t, "bob"), w.login(t, "carol")
	byName := func(name string, who ...*http.Cookie) (*http.Response, string) {
		return nav(t, w.authPortURL(name, 8080, testProxyURL+"/p/"+name+"/8080/"), who...)
	}

	// Bob, by id: allowed (organization). By name: not found, exactly as
	// for a name that does not exist; alice's id appears nowhere.
	if resp, body := nav(t, w.authPortURL(w.env.Id, 8080, testProxyURL+"/p/"+w.env.Id+"/8080/"), bob); resp.StatusCode != http.StatusFound {
		t.Fatalf("bob by id: %d %s", resp.StatusCode, body)
	}
	r1, b1 := byName("demo", bob)
	r2, b2 := byName("nosuchname", bob)
	if r1.StatusCode != http.StatusNotFound || r2.StatusCode != r1.StatusCode || b1 != strings.ReplaceAll(b2, "nosuchname", "demo") {
		t.Errorf("bob by name: existing %d %q, missing %d %q: must be the same", r1.StatusCode, b1, r2.StatusCode, b2)
	}
	for _, s := range []string{b1, r1.Header.Get("Location"), mintedToken(r1, b1)} {
		if strings.Contains(s, w.env.Id) {
			t.Errorf("alice's id disclosed to bob: %q", s)
		}
	}

	// Alice by name: her environment.
	resp, body := byName("demo", alice)
	tok, _ := url.QueryUnescape(mintedToken(resp, body))
	if got := w.authorize(t, w.env.Id, 8080, tok); resp.StatusCode != http.StatusFound || !got.Allowed || got.UserId != w.alice.ID {
		t.Fatalf("alice by name: %d %+v", resp.StatusCode, got)
	}

	// Carol creates "demo" too: by name she gets hers; alice still hers.
	cr, err := w.client("carol").Environments.CreateEnvironment(context.Background(), connect.NewRequest(&covev1.CreateEnvironmentRequest{
		Name: "demo", Spec: &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: "https://git.test/r.git"}}}))
	if err != nil {
		t.Fatal(err)
	}
	carolEnv := cr.Msg.Environment
	resp, body = byName("demo", carol)
	tok, _ = url.QueryUnescape(mintedToken(resp, body))
	if resp.StatusCode != http.StatusFound || tok == "" {
		t.Fatalf("carol by her own name: %d %s", resp.StatusCode, body)
	}
	if got := w.authorize(t, w.env.Id, 8080, tok); got.Allowed {
		t.Fatal("carol's name-based token opens alice's environment")
	}
	if got := w.authorize(t, carolEnv.Id, 8080, tok); !got.Allowed || got.UserId != w.carol.ID {
		t.Fatalf("carol's token for her own environment: %+v", got)
	}
	resp, body = byName("demo", alice)
	tok, _ = url.QueryUnescape(mintedToken(resp, body))
	if got := w.authorize(t, w.env.Id, 8080, tok); !got.Allowed || got.UserId != w.alice.ID {
		t.Fatalf("alice by name after carol's squat: %+v", got)
	}

	// Anonymous by name: the login page, whose URLs carry only the name.
	resp, body = byName("demo")
	if resp.StatusCode != http.StatusFound || strings.Contains(resp.Header.Get("Location")+body, w.env.Id) {
		t.Errorf("anonymous by name: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}
