package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/store"
	"github.com/covedev/cove/internal/store/sqlite"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const testProxyURL = "http://proxy.test:7743"

// portWorld is a server (no controllers running, so the test clock may
// jump) with two organizations: alice (owner) and bob in one, carol in
// another; a runner whose proxy is testProxyURL; alice's environment
// "demo" assigned to it.
type portWorld struct {
	srv               *server.Server
	st                store.Store
	url, dir          string
	clock             *testClock
	alice, bob, carol store.User
	tok               map[string]string // user name → personal access token
	runner            *apiclient.Clients
	runnerID          string
	env               *covev1.Environment
}

func newPortWorld(t *testing.T) *portWorld {
	t.Helper()
	ctx := context.Background()
	w := &portWorld{dir: t.TempDir(), clock: &testClock{t: time.Now()}, tok: map[string]string{}}
	st, err := sqlite.Open(ctx, filepath.Join(w.dir, "cove.db"))
	if err != nil {
		t.Fatal(err)
	}
	w.st = st
	w.srv, err = server.New(server.Config{Store: st, DataDir: w.dir, Now: w.clock.Now,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(w.srv.Handler())
	t.Cleanup(func() { hs.Close(); st.Close() })
	w.url = hs.URL

	w.alice, w.tok["alice"], err = w.srv.Bootstrap(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	w.bob = store.User{ID: "u-bob", OrganizationID: w.alice.OrganizationID, Name: "bob", Role: store.RoleMember}
	other := store.Organization{ID: "o-other", Name: "other"}
	w.carol = store.User{ID: "u-carol", OrganizationID: other.ID, Name: "carol", Role: store.RoleOwner}
	if err := st.CreateOrganization(ctx, other); err != nil {
		t.Fatal(err)
	}
	for _, u := range []store.User{w.bob, w.carol} {
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		if w.tok[u.Name], err = w.srv.IssueUserToken(ctx, u, "test", 0); err != nil {
			t.Fatal(err)
		}
	}

	w.runnerID, w.runner = w.joinRunner(t, "host-a", testProxyURL)
	cr, err := w.client("alice").Environments.CreateEnvironment(ctx, connect.NewRequest(&covev1.CreateEnvironmentRequest{Name: "demo",
		Spec: &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: "/src/repo"}}}))
	if err != nil {
		t.Fatal(err)
	}
	w.env = cr.Msg.Environment
	if w.env.Metadata.RunnerId != w.runnerID {
		t.Fatalf("environment not assigned to the runner: %v", w.env.Status)
	}
	return w
}

func (w *portWorld) client(user string) *apiclient.Clients {
	return apiclient.New(http.DefaultClient, w.url, w.tok[user])
}

// joinRunner joins an active runner advertising proxyURL.
func (w *portWorld) joinRunner(t *testing.T, name, proxyURL string) (string, *apiclient.Clients) {
	t.Helper()
	ctx := context.Background()
	jt, err := w.srv.CreateJoinToken(ctx, w.alice.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	join, err := apiclient.New(http.DefaultClient, w.url, "").Runners.JoinRunner(ctx,
		connect.NewRequest(&covev1.JoinRunnerRequest{JoinToken: jt, Name: name}))
	if err != nil {
		t.Fatal(err)
	}
	rc := apiclient.New(http.DefaultClient, w.url, join.Msg.RunnerToken)
	if _, err := rc.Runners.Heartbeat(ctx, connect.NewRequest(&covev1.HeartbeatRequest{Capabilities: &covev1.RunnerCapabilities{
		MaxEnvironments: 8, ProxyUrl: proxyURL, Classes: []*covev1.EnvironmentClass{{Id: "default"}}}})); err != nil {
		t.Fatal(err)
	}
	return join.Msg.RunnerId, rc
}

func (w *portWorld) share(t *testing.T, envID string, port int32, vis covev1.PortVisibility) *covev1.Environment {
	t.Helper()
	r, err := w.client("alice").Environments.SharePort(context.Background(),
		connect.NewRequest(&covev1.SharePortRequest{Id: envID, Port: port, Visibility: vis}))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg.Environment
}

func (w *portWorld) authorize(t *testing.T, envID string, port int32, tok string) *covev1.AuthorizePortAccessResponse {
	t.Helper()
	r, err := w.runner.Runners.AuthorizePortAccess(context.Background(), connect.NewRequest(&covev1.AuthorizePortAccessRequest{
		EnvironmentId: envID, Port: port, Token: tok}))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg
}

var (
	visPrivate = covev1.PortVisibility_PORT_VISIBILITY_PRIVATE
	visOrg     = covev1.PortVisibility_PORT_VISIBILITY_ORGANIZATION
	visPublic  = covev1.PortVisibility_PORT_VISIBILITY_PUBLIC
)

// accessMatrix is who may reach a port at each visibility.
var accessMatrix = map[covev1.PortVisibility]map[string]bool{
	visPrivate: {"alice": true, "bob": false, "carol": false, "anonymous": false},
	visOrg:     {"alice": true, "bob": true, "carol": false, "anonymous": false},
	visPublic:  {"alice": true, "bob": true, "carol": true, "anonymous": true},
}

func TestAuthorizePortAccessMatrix(t *testing.T) {
	w := newPortWorld(t)
	ids := map[string]string{"alice": w.alice.ID, "bob": w.bob.ID, "carol": w.carol.ID, "anonymous": ""}
	for _, vis := range []covev1.PortVisibility{visPrivate, visOrg, visPublic} {
		w.share(t, w.env.Id, 8080, vis)
		for who, want := range accessMatrix[vis] {
			got := w.authorize(t, w.env.Id, 8080, w.tok[who])
			if got.Allowed != want {
				t.Errorf("%s × %s: allowed %v (%s), want %v", who, vis, got.Allowed, got.Reason, want)
				continue
			}
			if want && (got.UserId != ids[who] || got.CacheSeconds != 30) {
				t.Errorf("%s × %s: user %q cache %d", who, vis, got.UserId, got.CacheSeconds)
			}
			if !want && (got.Reason == "" || got.CacheSeconds != 0) {
				t.Errorf("%s × %s: denied without reason or cached: %+v", who, vis, got)
			}
		}
		// Other ports stay private.
		if got := w.authorize(t, w.env.Id, 3000, w.tok["bob"]); got.Allowed {
			t.Errorf("%s: unshared port 3000 open to bob", vis)
		}
	}

	// A bad token on a public port is anonymous; elsewhere it is refused.
	if got := w.authorize(t, w.env.Id, 8080, "cove_pat_nope"); !got.Allowed || got.UserId != "" {
		t.Errorf("bad token on public port: %+v", got)
	}
	if got := w.authorize(t, w.env.Id, 3000, "cove_pat_nope"); got.Allowed || !strings.Contains(got.Reason, "invalid") {
		t.Errorf("bad token on private port: %+v", got)
	}

	// Only the runner the environment is assigned to may ask; users may not.
	ctx := context.Background()
	_, other := w.joinRunner(t, "host-b", "http://other.test")
	req := connect.NewRequest(&covev1.AuthorizePortAccessRequest{EnvironmentId: w.env.Id, Port: 8080})
	if _, err := other.Runners.AuthorizePortAccess(ctx, req); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("foreign runner: %v", err)
	}
	if _, err := w.client("alice").Runners.AuthorizePortAccess(ctx, req); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("user calling AuthorizePortAccess: %v", err)
	}
	req = connect.NewRequest(&covev1.AuthorizePortAccessRequest{EnvironmentId: "nope", Port: 8080})
	if _, err := w.runner.Runners.AuthorizePortAccess(ctx, req); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("unknown environment: %v", err)
	}
	req = connect.NewRequest(&covev1.AuthorizePortAccessRequest{EnvironmentId: w.env.Id, Port: 0})
	if _, err := w.runner.Runners.AuthorizePortAccess(ctx, req); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("port 0: %v", err)
	}
}

func TestPortSessionTokens(t *testing.T) {
	w := newPortWorld(t)
	ctx := context.Background()
	cr, err := w.client("alice").Environments.CreateEnvironment(ctx, connect.NewRequest(&covev1.CreateEnvironmentRequest{Name: "second",
		Spec: &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: "/src/repo"}}}))
	if err != nil {
		t.Fatal(err)
	}
	second := cr.Msg.Environment
	for _, e := range []string{w.env.Id, second.Id} {
		for _, p := range []int32{8080, 8081} {
			w.share(t, e, p, visOrg)
		}
	}
	tok := w.srv.IssuePortToken(w.bob.ID, w.env.Id, 8080)
	if !strings.HasPrefix(tok, server.PrefixPortToken) {
		t.Fatalf("token %q", tok)
	}
	if got := w.authorize(t, w.env.Id, 8080, tok); !got.Allowed || got.UserId != w.bob.ID || got.CacheSeconds != 30 {
		t.Fatalf("valid port token: %+v", got)
	}
	if got := w.authorize(t, w.env.Id, 8081, tok); got.Allowed {
		t.Errorf("port token for another port accepted")
	}
	if got := w.authorize(t, second.Id, 8080, tok); got.Allowed {
		t.Errorf("port token for another environment accepted")
	}
	// Tampering with the claims or the signature.
	body, sig, _ := strings.Cut(strings.TrimPrefix(tok, server.PrefixPortToken), ".")
	other := w.srv.IssuePortToken(w.bob.ID, w.env.Id, 8081)
	otherBody, _, _ := strings.Cut(strings.TrimPrefix(other, server.PrefixPortToken), ".")
	flip := func(s string) string {
		if s[len(s)/2] == 'A' {
			return s[:len(s)/2] + "B" + s[len(s)/2+1:]
		}
		return s[:len(s)/2] + "A" + s[len(s)/2+1:]
	}
	for name, bad := range map[string]string{
		"claims of another token": server.PrefixPortToken + otherBody + "." + sig,
		"flipped signature":       server.PrefixPortToken + body + "." + flip(sig),
		"flipped claims":          server.PrefixPortToken + flip(body) + "." + sig,
		"no signature":            server.PrefixPortToken + body,
		"as a personal token":     "cove_pat_" + body + "." + sig,
	} {
		if got := w.authorize(t, w.env.Id, 8080, bad); got.Allowed {
			t.Errorf("%s: accepted", name)
		}
		if got := w.authorize(t, w.env.Id, 8081, bad); got.Allowed {
			t.Errorf("%s: accepted on 8081", name)
		}
	}
	// A token of a user who is not allowed is refused like the user.
	carolTok := w.srv.IssuePortToken(w.carol.ID, w.env.Id, 8080)
	if got := w.authorize(t, w.env.Id, 8080, carolTok); got.Allowed {
		t.Errorf("carol's port token on an organization port accepted")
	}
	// Answers are not cached past the token's expiry; expired tokens fail.
	w.clock.Add(9*time.Minute + 50*time.Second)
	if got := w.authorize(t, w.env.Id, 8080, tok); !got.Allowed || got.CacheSeconds > 10 {
		t.Errorf("nearly expired token: %+v", got)
	}
	w.clock.Add(11 * time.Second)
	if got := w.authorize(t, w.env.Id, 8080, tok); got.Allowed {
		t.Errorf("expired token accepted")
	}

	// The key is private and survives a restart.
	fi, err := os.Stat(filepath.Join(w.dir, "port_token_key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	srv2, err := server.New(server.Config{Store: w.st, DataDir: w.dir, Now: w.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := srv2.IssuePortToken("u", "e", 1), w.srv.IssuePortToken("u", "e", 1); a != b {
		t.Errorf("a restarted server signs differently")
	}
}

func TestSharePort(t *testing.T) {
	w := newPortWorld(t)
	ctx := context.Background()
	v := w.env.Spec.SpecVersion
	env := w.share(t, "demo", 8080, visPublic)
	env = w.share(t, "demo", 3000, visOrg)
	if env.Spec.SpecVersion != v+2 || len(env.Spec.Ports) != 2 || env.Spec.Ports[0].Port != 3000 || env.Spec.Ports[1].Visibility != visPublic {
		t.Fatalf("ports after sharing: v%d %v", env.Spec.SpecVersion, env.Spec.Ports)
	}
	env = w.share(t, w.env.Id, 8080, visOrg)
	if len(env.Spec.Ports) != 2 || env.Spec.Ports[1].Visibility != visOrg {
		t.Fatalf("update: %v", env.Spec.Ports)
	}
	env = w.share(t, w.env.Id, 8080, visPrivate)
	if len(env.Spec.Ports) != 1 || env.Spec.Ports[0].Port != 3000 {
		t.Fatalf("private removes the entry: %v", env.Spec.Ports)
	}
	for name, tc := range map[string]struct {
		user string
		req  *covev1.SharePortRequest
		want connect.Code
	}{
		"other member": {"bob", &covev1.SharePortRequest{Id: w.env.Id, Port: 8080, Visibility: visPublic}, connect.CodeNotFound},
		"other org":    {"carol", &covev1.SharePortRequest{Id: "demo", Port: 8080, Visibility: visPublic}, connect.CodeNotFound},
		"anonymous":    {"nobody", &covev1.SharePortRequest{Id: w.env.Id, Port: 8080, Visibility: visPublic}, connect.CodeUnauthenticated},
		"port 0":       {"alice", &covev1.SharePortRequest{Id: w.env.Id, Port: 0, Visibility: visPublic}, connect.CodeInvalidArgument},
		"port 65536":   {"alice", &covev1.SharePortRequest{Id: w.env.Id, Port: 65536, Visibility: visPublic}, connect.CodeInvalidArgument},
		"visibility":   {"alice", &covev1.SharePortRequest{Id: w.env.Id, Port: 80, Visibility: 9}, connect.CodeInvalidArgument},
		"unknown env":  {"alice", &covev1.SharePortRequest{Id: "nope", Port: 80, Visibility: visPublic}, connect.CodeNotFound},
	} {
		if _, err := w.client(tc.user).Environments.SharePort(ctx, connect.NewRequest(tc.req)); connect.CodeOf(err) != tc.want {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	got, err := w.client("alice").Environments.GetEnvironment(ctx, connect.NewRequest(&covev1.GetEnvironmentRequest{Id: "demo"}))
	if err != nil || len(got.Msg.Environment.Spec.Ports) != 1 {
		t.Fatalf("refused calls changed the spec: %v %v", got, err)
	}
}
