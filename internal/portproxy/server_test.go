package portproxy_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	"github.com/covedev/cove/internal/portproxy"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/store"
	"github.com/covedev/cove/internal/store/sqlite"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"golang.org/x/net/websocket"
)

// rpcAuthorizer asks the server, as the runner does.
type rpcAuthorizer struct{ c *apiclient.Clients }

func (a rpcAuthorizer) Authorize(ctx context.Context, envID string, port int, tok string) (bool, string, time.Duration, error) {
	r, err := a.c.Runners.AuthorizePortAccess(ctx, connect.NewRequest(&covev1.AuthorizePortAccessRequest{
		EnvironmentId: envID, Port: int32(port), Token: tok}))
	if err != nil {
		return false, "", 0, err
	}
	return r.Msg.Allowed, r.Msg.UserId, time.Duration(r.Msg.CacheSeconds) * time.Second, nil
}

type envResolver struct {
	env     **covev1.Environment
	backend string
}

func (r envResolver) Resolve(_ context.Context, ref string) (portproxy.Target, error) {
	env := *r.env
	if env == nil || (ref != env.Id && ref != env.Metadata.Name) {
		return portproxy.Target{}, errors.New("not running here")
	}
	return portproxy.Target{EnvID: env.Id, OwnerID: env.Metadata.OwnerId, Dial: func(ctx context.Context, port int) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", r.backend)
	}}, nil
}

// TestServerAndProxy runs the real server and the proxy, which asks the
// server over the API with a runner token, for every user × visibility,
// with API tokens, a browser login and a WebSocket.
func TestServerAndProxy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "cove.db"))
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(server.Config{Store: st, DataDir: dir, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { api.Close(); st.Close() })

	// Users: alice (owner) and bob in one organization, carol in another.
	alice, aliceTok, err := srv.Bootstrap(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	toks := map[string]string{"alice": aliceTok, "anonymous": ""}
	ids := map[string]string{"alice": alice.ID}
	if err := st.CreateOrganization(ctx, store.Organization{ID: "o-2", Name: "other"}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []store.User{{ID: "u-bob", OrganizationID: alice.OrganizationID, Name: "bob", Role: store.RoleMember},
		{ID: "u-carol", OrganizationID: "o-2", Name: "carol", Role: store.RoleOwner}} {
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		if toks[u.Name], err = srv.IssueUserToken(ctx, u, "t", 0); err != nil {
			t.Fatal(err)
		}
		ids[u.Name] = u.ID
	}

	// The application inside the environment.
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" || strings.Contains(r.Header.Get("Cookie"), "cove_") {
			http.Error(w, "credentials leaked", http.StatusTeapot)
			return
		}
		_, _ = io.WriteString(w, "app:"+r.URL.Path)
	})
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { _, _ = io.Copy(c, c) }))
	backend := httptest.NewServer(mux)
	t.Cleanup(backend.Close)

	// The runner: joins, runs the proxy, advertises its URL.
	jt, err := srv.CreateJoinToken(ctx, alice.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	join, err := apiclient.New(http.DefaultClient, api.URL, "").Runners.JoinRunner(ctx, connect.NewRequest(&covev1.JoinRunnerRequest{JoinToken: jt, Name: "r1"}))
	if err != nil {
		t.Fatal(err)
	}
	runner := apiclient.New(http.DefaultClient, api.URL, join.Msg.RunnerToken)
	var env *covev1.Environment
	clk := &clock{t: time.Now()}
	px := httptest.NewServer(portproxy.New(portproxy.Config{Resolver: envResolver{env: &env, backend: backend.Listener.Addr().String()},
		Authorizer: rpcAuthorizer{runner}, ServerURL: api.URL, Log: quiet, Now: clk.Now}))
	t.Cleanup(px.Close)
	if _, err := runner.Runners.Heartbeat(ctx, connect.NewRequest(&covev1.HeartbeatRequest{Capabilities: &covev1.RunnerCapabilities{
		MaxEnvironments: 4, ProxyUrl: px.URL, Classes: []*covev1.EnvironmentClass{{Id: "default"}}}})); err != nil {
		t.Fatal(err)
	}
	aliceAPI := apiclient.New(http.DefaultClient, api.URL, aliceTok)
	cr, err := aliceAPI.Environments.CreateEnvironment(ctx, connect.NewRequest(&covev1.CreateEnvironmentRequest{Name: "demo",
		Spec: &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: "/src/repo"}}}))
	if err != nil {
		t.Fatal(err)
	}
	env = cr.Msg.Environment
	if env.Metadata.RunnerId != join.Msg.RunnerId {
		t.Fatalf("not scheduled: %v", env.Status)
	}

	const (
		vPrivate = covev1.PortVisibility_PORT_VISIBILITY_PRIVATE
		vOrg     = covev1.PortVisibility_PORT_VISIBILITY_ORGANIZATION
		vPublic  = covev1.PortVisibility_PORT_VISIBILITY_PUBLIC
	)
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
		if _, err := aliceAPI.Environments.SharePort(ctx, connect.NewRequest(&covev1.SharePortRequest{Id: "demo", Port: 8080, Visibility: m.vis})); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Minute)
		for _, who := range []string{"alice", "bob", "carol", "anonymous"} {
			req, _ := http.NewRequest("GET", px.URL+"/p/demo/8080/hello", nil)
			if toks[who] != "" {
				req.Header.Set("Authorization", "Bearer "+toks[who])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := http.StatusForbidden
			switch {
			case m.allowed[who]:
				want = http.StatusOK
			case who == "anonymous":
				want = http.StatusUnauthorized
			}
			if resp.StatusCode != want || (want == http.StatusOK && string(body) != "app:/hello") {
				t.Errorf("%s × %s: %d %q, want %d", who, m.vis, resp.StatusCode, body, want)
			}
		}
	}

	// A browser: proxy → server login → /auth/port → proxy cookie → app.
	if _, err := aliceAPI.Environments.SharePort(ctx, connect.NewRequest(&covev1.SharePortRequest{Id: "demo", Port: 8080, Visibility: vOrg})); err != nil {
		t.Fatal(err)
	}
	browse := func(who string) (int, string) {
		jar, _ := cookiejar.New(nil)
		cl := &http.Client{Jar: jar}
		req, _ := http.NewRequest("GET", px.URL+"/p/demo/8080/page?x=1", nil)
		req.Header.Set("Accept", "text/html")
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/login" {
			t.Fatalf("%s: browser not sent to login: %d %v", who, resp.StatusCode, resp.Request.URL)
		}
		form := url.Values{"token": {toks[who]}, "next": {resp.Request.URL.Query().Get("next")}}
		resp, err = cl.PostForm(api.URL+"/login", form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if st, body := browse("bob"); st != http.StatusOK || body != "app:/page" {
		t.Errorf("bob's browser: %d %q", st, body)
	}
	if st, body := browse("carol"); st != http.StatusForbidden || !strings.Contains(body, "organization") {
		t.Errorf("carol's browser: %d %q", st, body)
	}

	// WebSocket through the proxy, with a token.
	cfg, _ := websocket.NewConfig(strings.Replace(px.URL, "http", "ws", 1)+"/p/"+env.Id+"/8080/ws", px.URL)
	cfg.Header = http.Header{"Authorization": {"Bearer " + toks["bob"]}}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(10 * time.Second))
	var got string
	if err := websocket.Message.Send(ws, "ping"); err != nil {
		t.Fatal(err)
	}
	if err := websocket.Message.Receive(ws, &got); err != nil || got != "ping" {
		t.Fatalf("websocket echo %q %v", got, err)
	}
}
