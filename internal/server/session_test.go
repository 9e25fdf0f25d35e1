package server_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"connectrpc.com/connect"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

// TestBrowserSessionEndsWithItsToken (F14): a browser login made with a
// token stops minting port tokens as soon as that token is revoked, and
// once it expires.
func TestBrowserSessionEndsWithItsToken(t *testing.T) {
	w := newPortWorld(t)
	w.share(t, w.env.Id, 8080, visOrg)
	ctx := context.Background()
	bob := covev1connect.NewUserServiceClient(http.DefaultClient, w.url, bearer(w.tok["bob"]))
	authURL := w.authPortURL(w.env.Id, 8080, testProxyURL+"/p/"+w.env.Id+"/8080/")
	loggedIn := func(ttl int64) (*covev1.CreateTokenResponse, *http.Cookie) {
		t.Helper()
		tr, err := bob.CreateToken(ctx, connect.NewRequest(&covev1.CreateTokenRequest{Name: "browser", TtlSeconds: ttl}))
		if err != nil {
			t.Fatal(err)
		}
		resp, _ := postLogin(t, w.url, tr.Msg.Token, "", "")
		cookie := sessionCookie(t, resp)
		if resp, body := nav(t, authURL, cookie); resp.StatusCode != http.StatusFound || mintedToken(resp, body) == "" {
			t.Fatalf("fresh session: %d %s", resp.StatusCode, body)
		}
		return tr.Msg, cookie
	}
	sentToLogin := func(cookie *http.Cookie) bool {
		resp, body := nav(t, authURL, cookie)
		loc, _ := url.Parse(resp.Header.Get("Location"))
		return mintedToken(resp, body) == "" && loc != nil && loc.Path == "/login"
	}

	tr, cookie := loggedIn(0)
	if _, err := bob.RevokeToken(ctx, connect.NewRequest(&covev1.RevokeTokenRequest{Id: tr.Info.Id})); err != nil {
		t.Fatal(err)
	}
	if !sentToLogin(cookie) {
		t.Fatal("a session of a revoked token still mints port tokens")
	}

	_, cookie = loggedIn(120)
	w.clock.Add(121 * time.Second)
	if !sentToLogin(cookie) {
		t.Fatal("a session outlived the token it came from")
	}
}
