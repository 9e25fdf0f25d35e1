package portproxy_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestNamesAskNothingForAnonymous: a request by name without a cove
// credential is answered without asking the server (it could only learn
// that the name exists), and looks like one for a name nobody has.
func TestNamesAskNothingForAnonymous(t *testing.T) {
	f := newFixture(t, "")
	for _, path := range []string{"/p/demo/8080/", "/p/nope/8080/"} {
		if r := do(t, "GET", f.proxyURL+path, nil); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %d", path, r.StatusCode)
		}
		if r := do(t, "GET", f.proxyURL+path, map[string]string{"Cookie": "cove_port_session=not-a-cove-token"}); r.StatusCode != http.StatusForbidden {
			t.Errorf("%s with a foreign cookie: %d", path, r.StatusCode)
		}
	}
	if n := f.auth.count(); n != 0 {
		t.Errorf("anonymous requests by name asked the server %d times", n)
	}
}

// TestNameOwnershipIsRemembered: a token that is not the owner's is
// refused by name without asking again, per port; the owner's token goes
// through.
func TestNameOwnershipIsRemembered(t *testing.T) {
	f := newFixture(t, "")
	for range 3 {
		if r := do(t, "GET", f.proxyURL+"/p/demo/8080/echo/", map[string]string{"Authorization": "Bearer cove_pat_bad"}); r.StatusCode != http.StatusForbidden {
			t.Fatalf("not the owner's token: %d", r.StatusCode)
		}
	}
	if n := f.auth.count(); n != 1 {
		t.Errorf("server asked %d times about a token that is not the owner's, want 1", n)
	}
	decodeSeen(t, do(t, "GET", f.proxyURL+"/p/demo/8080/echo/", map[string]string{"Authorization": "Bearer cove_pat_good"}))
}

// TestAuthHandOffChecksTheToken: /__cove/auth sets no cookie for a token
// that does not reach the port (an environment stopped meanwhile, a forged
// token) and says so, instead of sending the browser round the login
// again; it reveals nothing either way.
func TestAuthHandOffChecksTheToken(t *testing.T) {
	f := newFixture(t, "")
	host := strings.TrimPrefix(f.proxyURL, "http://")
	hand := func(tok, path string) *http.Response {
		return do(t, "GET", f.proxyURL+"/__cove/auth?token="+url.QueryEscape(tok)+"&return="+url.QueryEscape("http://"+host+path), nil)
	}
	var answers []string
	for _, tc := range []struct{ tok, path string }{
		{"cove_port_bad", "/p/demo/8080/"},   // exists, token refused
		{"cove_port_bad", "/p/env1/8080/"},   // by id
		{"cove_port_good", "/p/nope/8080/"},  // no such name
		{"cove_port_good", "/p/env99/8080/"}, // no such id
	} {
		r := hand(tc.tok, tc.path)
		if r.StatusCode != http.StatusForbidden || len(r.Cookies()) != 0 || r.Header.Get("Location") != "" {
			t.Errorf("%s %s: %d cookies %v Location %q", tc.tok, tc.path, r.StatusCode, r.Cookies(), r.Header.Get("Location"))
		}
		answers = append(answers, r.Header.Get("Content-Length"))
	}
	for _, a := range answers[1:] {
		if a != answers[0] {
			t.Errorf("hand-off answers differ: %v", answers)
		}
	}
	if r := hand("cove_port_good", "/p/demo/8080/x"); r.StatusCode != http.StatusFound || len(r.Cookies()) != 1 {
		t.Errorf("good token: %d %v", r.StatusCode, r.Cookies())
	}
}
