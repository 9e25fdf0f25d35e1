package server_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func send(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func get(t *testing.T, u string, cookies ...*http.Cookie) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for _, c := range cookies {
		req.AddCookie(c)
	}
	return send(t, req)
}

// nav is a browser's top-level page load (with Fetch Metadata).
func nav(t *testing.T, u string, cookies ...*http.Cookie) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	req.Header.Set("Sec-Fetch-Dest", "document")
	req.Header.Set("Sec-Fetch-Site", "same-site")
	for _, c := range cookies {
		req.AddCookie(c)
	}
	return send(t, req)
}

func postLogin(t *testing.T, base, tok, next, origin string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/login", strings.NewReader(url.Values{"token": {tok}, "next": {next}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	return send(t, req)
}

func sessionCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == "cove_session" {
			return c
		}
	}
	t.Fatalf("no session cookie in %v", resp.Header)
	return nil
}

func TestLoginAndAuthPortRedirects(t *testing.T) {
	w := newPortWorld(t)
	w.share(t, w.env.Id, 8080, visOrg)
	ret := testProxyURL + "/p/" + w.env.Id + "/8080/app/?x=1"
	authPort := "/auth/port?" + url.Values{"env": {w.env.Id}, "port": {"8080"}, "return": {ret}}.Encode()

	// Without a login cookie, /auth/port sends the browser to /login.
	resp, _ := get(t, w.url+authPort)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || loc.Path != "/login" || loc.Query().Get("next") != authPort {
		t.Fatalf("no session: %d %v", resp.StatusCode, loc)
	}
	resp, body := get(t, w.url+loc.String())
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="token"`) || !strings.Contains(body, "/auth/port?env="+w.env.Id) {
		t.Fatalf("login form: %d %s", resp.StatusCode, body)
	}
	// HTML-escaped, so a crafted next cannot inject markup.
	if _, body := get(t, w.url+"/login?next="+url.QueryEscape(`"><script>x</script>`)); strings.Contains(body, "<script>x") {
		t.Fatal("next not escaped in the login form")
	}

	// A bad token is refused; so is a cross-site post.
	if resp, _ := postLogin(t, w.url, "cove_pat_nope", authPort, ""); resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Fatalf("bad token login: %d", resp.StatusCode)
	}
	if resp, _ := postLogin(t, w.url, w.tok["bob"], authPort, "http://evil.test"); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Fatalf("cross-site login: %d", resp.StatusCode)
	}
	resp, _ = postLogin(t, w.url, w.tok["bob"], authPort, w.url)
	sess := sessionCookie(t, resp)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != authPort ||
		!sess.HttpOnly || sess.SameSite != http.SameSiteLaxMode || sess.Secure || sess.Path != "/" {
		t.Fatalf("login: %d %q %+v", resp.StatusCode, resp.Header.Get("Location"), sess)
	}

	// Logged in, /auth/port sends the browser to the runner's proxy with a
	// port token the runner's AuthorizePortAccess accepts for bob.
	resp, _ = nav(t, w.url+authPort, sess)
	loc, err = url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || loc.Scheme+"://"+loc.Host != testProxyURL || loc.Path != "/__cove/auth" ||
		loc.Query().Get("return") != ret {
		t.Fatalf("auth port: %d %v", resp.StatusCode, loc)
	}
	tok := loc.Query().Get("token")
	if got := w.authorize(t, w.env.Id, 8080, tok); !got.Allowed || got.UserId != w.bob.ID {
		t.Fatalf("issued token refused: %+v", got)
	}
	if got := w.authorize(t, w.env.Id, 8081, tok); got.Allowed {
		t.Fatal("issued token works on another port")
	}
	// The login cookie itself is not a port token.
	if got := w.authorize(t, w.env.Id, 8080, sess.Value); got.Allowed {
		t.Fatal("session cookie accepted as a port token")
	}

	// The return URL must be this port's URL, naming the environment as
	// the request does, on the proxy or (host form) its domain; everything
	// else is refused.
	q := func(ret string) string {
		return w.url + "/auth/port?" + url.Values{"env": {w.env.Id}, "port": {"8080"}, "return": {ret}}.Encode()
	}
	for _, ok := range []string{"http://8080--" + w.env.Id + ".proxy.test:7743/x?y", testProxyURL + "/p/" + w.env.Id + "/8080/"} {
		if resp, body := nav(t, q(ok), sess); resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), ok[:strings.Index(ok[7:], "/")+7]+"/__cove/auth?") {
			t.Errorf("return %s: %d %q %s", ok, resp.StatusCode, resp.Header.Get("Location"), body)
		}
	}
	id := w.env.Id
	for _, bad := range []string{"", "http://evil.test/p/" + id + "/8080/", "https://proxy.test:7743/p/" + id + "/8080/", "http://proxy.test:7744/p/" + id + "/8080/",
		"http://8080--" + id + ".evil.test:7743/", "http://8081--" + id + ".proxy.test:7743/", "http://8080--other.proxy.test:7743/",
		"http://8080--demo.proxy.test:7743/", testProxyURL + "/p/demo/8080/", testProxyURL + "/p/" + id + "/8081/", testProxyURL + "/",
		"http://a.8080--" + id + ".proxy.test:7743/", "/p/" + id + "/8080/", "//proxy.test:7743/p/" + id + "/8080/",
		"http://x@proxy.test:7743/p/" + id + "/8080/", "javascript:alert(1)"} {
		if resp, _ := nav(t, q(bad), sess); resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Errorf("return %q: %d %q", bad, resp.StatusCode, resp.Header.Get("Location"))
		}
	}

	// Carol (another organization) logs in but gets no token for the port.
	resp, _ = postLogin(t, w.url, w.tok["carol"], "", "")
	carol := sessionCookie(t, resp)
	if resp, _ := nav(t, w.url+authPort, carol); resp.StatusCode != http.StatusForbidden || resp.Header.Get("Location") != "" {
		t.Errorf("carol: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// A forged session cookie is no login.
	forged := &http.Cookie{Name: "cove_session", Value: sess.Value[:len(sess.Value)-2] + "xx"}
	if resp, _ := nav(t, w.url+authPort, forged); resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), "/login?") {
		t.Errorf("forged session: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	// After login, only local next URLs are followed.
	for next, want := range map[string]string{
		"/auth/port?env=x":         "/auth/port?env=x",
		w.url + "/auth/port?env=x": w.url + "/auth/port?env=x",
		"https://evil.test/":       "",
		"//evil.test/":             "",
		`/\evil.test/`:             "",
		"http://evil.test" + w.url: "",
		"javascript:alert(1)":      "",
		"auth/port":                "",
	} {
		resp, _ := postLogin(t, w.url, w.tok["bob"], next, "")
		if got := resp.Header.Get("Location"); got != want {
			t.Errorf("next %q: Location %q, want %q", next, got, want)
		}
	}
}
