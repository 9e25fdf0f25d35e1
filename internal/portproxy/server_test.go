package portproxy_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"golang.org/x/net/websocket"
)

const (
	vPrivate = covev1.PortVisibility_PORT_VISIBILITY_PRIVATE
	vOrg     = covev1.PortVisibility_PORT_VISIBILITY_ORGANIZATION
	vPublic  = covev1.PortVisibility_PORT_VISIBILITY_PUBLIC
)

// TestServerAndProxy runs the real server and the proxy, which asks the
// server over the API with a runner token, for every user × visibility,
// by id and by name, with API tokens, a browser login and a WebSocket.
func TestServerAndProxy(t *testing.T) {
	w := newWorld(t)
	env := w.create(t, "alice", "demo")

	matrix := []struct {
		vis     covev1.PortVisibility
		allowed map[string]bool
	}{
		{vPrivate, map[string]bool{"alice": true}},
		{vOrg, map[string]bool{"alice": true, "bob": true}},
		{vPublic, map[string]bool{"alice": true, "bob": true, "carol": true, "anonymous": true}},
		{vPrivate, map[string]bool{"alice": true}}, // narrowing takes effect once cached answers expire
	}
	for _, m := range matrix {
		w.share(t, "alice", "demo", 8080, m.vis)
		for _, who := range []string{"alice", "bob", "carol", "anonymous"} {
			for _, ref := range []string{env.Id, "demo"} {
				// A name is the owner's only: for everyone else it
				// resolves to nothing, whatever the sharing.
				allowed := m.allowed[who] && (ref == env.Id || who == "alice")
				resp, body := w.get(t, "/p/"+ref+"/8080/hello", who, nil)
				want := http.StatusForbidden
				switch {
				case allowed:
					want = http.StatusOK
				case who == "anonymous":
					want = http.StatusUnauthorized
				}
				if resp.StatusCode != want || (allowed && body != "alice:demo:/hello") {
					t.Errorf("%s × %s via %s: %d %q, want %d", who, m.vis, ref, resp.StatusCode, body, want)
				}
			}
		}
	}

	// A browser: proxy → server login → /auth/port → proxy cookie → app.
	w.share(t, "alice", "demo", 8080, vOrg)
	if st, body := w.browse(t, "/p/"+env.Id+"/8080/page?x=1", "bob"); st != http.StatusOK || body != "alice:demo:/page" {
		t.Errorf("bob's browser: %d %q", st, body)
	}
	if st, body := w.browse(t, "/p/"+env.Id+"/8080/page?x=1", "carol"); st != http.StatusForbidden || !strings.Contains(body, "organization") {
		t.Errorf("carol's browser: %d %q", st, body)
	}
	if st, body := w.browse(t, "/p/demo/8080/page", "alice"); st != http.StatusOK || body != "alice:demo:/page" {
		t.Errorf("alice's browser by name: %d %q", st, body)
	}

	// WebSocket through the proxy, with a token.
	cfg, _ := websocket.NewConfig(strings.Replace(w.px.URL, "http", "ws", 1)+"/p/"+env.Id+"/8080/ws", w.px.URL)
	cfg.Header = http.Header{"Authorization": {"Bearer " + w.toks["bob"]}}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(testutil.Patience(t)))
	var got string
	if err := websocket.Message.Send(ws, "ping"); err != nil {
		t.Fatal(err)
	}
	if err := websocket.Message.Receive(ws, &got); err != nil || got != "ping" {
		t.Fatalf("websocket echo %q %v", got, err)
	}
}
