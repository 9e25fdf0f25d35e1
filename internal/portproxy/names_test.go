package portproxy_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// sameAnswer compares two proxy answers: status, headers (Date aside) and
// body, after putting want's reference in place of got's.
func sameAnswer(t *testing.T, what string, got *http.Response, gotBody, gotRef string, want *http.Response, wantBody, wantRef string) {
	t.Helper()
	norm := func(s string) string { return strings.ReplaceAll(s, url.QueryEscape(gotRef), url.QueryEscape(wantRef)) }
	if got.StatusCode != want.StatusCode || strings.ReplaceAll(gotBody, gotRef, wantRef) != wantBody {
		t.Errorf("%s: %d %q vs %d %q", what, got.StatusCode, gotBody, want.StatusCode, wantBody)
	}
	for k := range mergeKeys(got.Header, want.Header) {
		if k == "Date" || k == "Content-Length" { // the body is compared above
			continue
		}
		if g, w := norm(strings.ReplaceAll(strings.Join(got.Header.Values(k), ","), gotRef, wantRef)), strings.Join(want.Header.Values(k), ","); g != w {
			t.Errorf("%s: header %s %q vs %q", what, k, g, w)
		}
	}
}

func mergeKeys(a, b http.Header) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}

// TestNameDisclosesNothing performs F10: an unauthenticated browser-like
// request by environment name. The answer carries no environment id
// anywhere, and is the same for a name that exists and one that does not;
// the same holds for ids, and with a credential that proves nothing.
func TestNameDisclosesNothing(t *testing.T) {
	w := newWorld(t)
	env := w.create(t, "alice", "envb")
	html := map[string]string{"Accept": "text/html"}

	// The review's curl: -H 'Accept: text/html' /p/envb/1/
	resp, body := w.get(t, "/p/envb/1/", "anonymous", html)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("browser by name: %d %s", resp.StatusCode, body)
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			if strings.Contains(v, env.Id) {
				t.Errorf("id disclosed in %s: %s", k, v)
			}
		}
	}
	if strings.Contains(body, env.Id) {
		t.Errorf("id disclosed in the body: %s", body)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if loc.Path != "/auth/port" || loc.Query().Get("env") != "envb" {
		t.Errorf("login redirect %v: want env=envb", loc)
	}

	// Existing and missing names, and existing (not public) and missing
	// ids, look alike: to browsers, to scripts, and with a bogus token.
	w.share(t, "alice", "envb", 3000, vPublic) // even with a public port by that name
	for _, hdr := range []map[string]string{html, {"Accept": "*/*"}, {"Authorization": "Bearer cove_pat_bogus"}, {"Cookie": "cove_port_session=cove_port_x.y"}} {
		for _, port := range []string{"1", "3000"} {
			r1, b1 := w.get(t, "/p/envb/"+port+"/x?q=1", "anonymous", hdr)
			r2, b2 := w.get(t, "/p/nosuchenv/"+port+"/x?q=1", "anonymous", hdr)
			sameAnswer(t, "name "+port+" "+strings.Join(mapKeys(hdr), ","), r2, b2, "nosuchenv", r1, b1, "envb")
		}
		r1, b1 := w.get(t, "/p/"+env.Id+"/1/x", "anonymous", hdr)
		r2, b2 := w.get(t, "/p/0123456789abcdef/1/x", "anonymous", hdr)
		sameAnswer(t, "id "+strings.Join(mapKeys(hdr), ","), r2, b2, "0123456789abcdef", r1, b1, env.Id)
	}
}

func mapKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// TestNamesResolveForTheirOwner performs F16: carol creates an environment
// with the name of alice's. Alice's URL by name still reaches alice's
// environment; carol's reaches carol's; nobody else's request by name
// reaches either, and ids keep working for everyone the sharing allows.
func TestNamesResolveForTheirOwner(t *testing.T) {
	w := newWorld(t)
	aliceEnv := w.create(t, "alice", "envb")
	w.share(t, "alice", "envb", 8080, vPublic)
	if resp, body := w.get(t, "/p/envb/8080/", "alice", nil); resp.StatusCode != http.StatusOK || body != "alice:envb:/" {
		t.Fatalf("alice by name before: %d %q", resp.StatusCode, body)
	}

	carolEnv := w.create(t, "carol", "envb")
	w.share(t, "carol", carolEnv.Id, 8080, vPublic)
	for _, tc := range []struct{ who, path, want string }{
		{"alice", "/p/envb/8080/", "alice:envb:/"},
		{"carol", "/p/envb/8080/", "carol:envb:/"},
		{"alice", "/p/" + carolEnv.Id + "/8080/", "carol:envb:/"}, // public, by id
		{"carol", "/p/" + aliceEnv.Id + "/8080/", "alice:envb:/"},
		{"anonymous", "/p/" + aliceEnv.Id + "/8080/", "alice:envb:/"},
	} {
		if resp, body := w.get(t, tc.path, tc.who, nil); resp.StatusCode != http.StatusOK || body != tc.want {
			t.Errorf("%s %s: %d %q, want %q", tc.who, tc.path, resp.StatusCode, body, tc.want)
		}
	}
	// By name, for anyone else: the answer for a name nobody has.
	for _, who := range []string{"bob", "anonymous"} {
		r1, b1 := w.get(t, "/p/envb/8080/", who, nil)
		r2, b2 := w.get(t, "/p/zzz/8080/", who, nil)
		sameAnswer(t, who+" by name", r2, b2, "zzz", r1, b1, "envb")
		if r1.StatusCode == http.StatusOK {
			t.Errorf("%s reached an environment by someone else's name: %s", who, b1)
		}
	}
	// Browsers: each owner's login by name lands on their own environment.
	if st, body := w.browse(t, "/p/envb/8080/page", "alice"); st != http.StatusOK || body != "alice:envb:/page" {
		t.Errorf("alice's browser: %d %q", st, body)
	}
	if st, body := w.browse(t, "/p/envb/8080/page", "carol"); st != http.StatusOK || body != "carol:envb:/page" {
		t.Errorf("carol's browser: %d %q", st, body)
	}
	// Bob's browser by alice's name: the server finds no environment of
	// his by that name, and says only that.
	if st, body := w.browse(t, "/p/envb/8080/page", "bob"); st != http.StatusNotFound || strings.Contains(body, aliceEnv.Id) {
		t.Errorf("bob's browser by name: %d %q", st, body)
	}
}
