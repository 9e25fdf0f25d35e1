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
	"sync"
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

// running is the resolver: environments "running" on the runner, each
// with its own application, which answers "<owner>:<env name>:<path>".
type running struct {
	mu      sync.Mutex
	envs    map[string]*covev1.Environment
	backend map[string]string // env id → application address
}

func (r *running) add(t *testing.T, env *covev1.Environment, owner string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Authorization") != "" || strings.Contains(req.Header.Get("Cookie"), "cove_") {
			http.Error(w, "credentials leaked", http.StatusTeapot)
			return
		}
		_, _ = io.WriteString(w, owner+":"+env.Metadata.Name+":"+req.URL.Path)
	})
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { _, _ = io.Copy(c, c) }))
	app := httptest.NewServer(mux)
	t.Cleanup(app.Close)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.envs[env.Id] = env
	r.backend[env.Id] = app.Listener.Addr().String()
}

func (r *running) Resolve(_ context.Context, id string) (portproxy.Target, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	env, ok := r.envs[id]
	if !ok {
		return portproxy.Target{}, errors.New("not running here")
	}
	addr := r.backend[id]
	return portproxy.Target{EnvID: env.Id, OwnerID: env.Metadata.OwnerId, Dial: func(ctx context.Context, port int) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}, nil
}

func (r *running) Named(_ context.Context, name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for id, env := range r.envs {
		if env.Metadata.Name == name {
			ids = append(ids, id)
		}
	}
	return ids
}

// world is the real server, a runner's proxy asking it over the API, and
// three users: alice (owner) and bob in one organization, carol in another.
type world struct {
	api, px *httptest.Server
	toks    map[string]string // user → personal access token; "anonymous" → ""
	ids     map[string]string // user → id
	clock   *clock
	run     *running
}

func newWorld(t *testing.T) *world {
	t.Helper()
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
	w := &world{api: httptest.NewServer(srv.Handler()), toks: map[string]string{"anonymous": ""}, ids: map[string]string{},
		clock: &clock{t: time.Now()}, run: &running{envs: map[string]*covev1.Environment{}, backend: map[string]string{}}}
	t.Cleanup(func() { w.api.Close(); st.Close() })

	alice, aliceTok, err := srv.Bootstrap(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	w.toks["alice"], w.ids["alice"] = aliceTok, alice.ID
	if err := st.CreateOrganization(ctx, store.Organization{ID: "o-2", Name: "other"}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []store.User{{ID: "u-bob", OrganizationID: alice.OrganizationID, Name: "bob", Role: store.RoleMember},
		{ID: "u-carol", OrganizationID: "o-2", Name: "carol", Role: store.RoleOwner}} {
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		if w.toks[u.Name], err = srv.IssueUserToken(ctx, u, "t", 0); err != nil {
			t.Fatal(err)
		}
		w.ids[u.Name] = u.ID
	}

	jt, err := srv.CreateJoinToken(ctx, alice.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	join, err := apiclient.New(http.DefaultClient, w.api.URL, "").Runners.JoinRunner(ctx, connect.NewRequest(&covev1.JoinRunnerRequest{JoinToken: jt, Name: "r1"}))
	if err != nil {
		t.Fatal(err)
	}
	runner := apiclient.New(http.DefaultClient, w.api.URL, join.Msg.RunnerToken)
	w.px = httptest.NewServer(portproxy.New(portproxy.Config{Resolver: w.run,
		Authorizer: rpcAuthorizer{runner}, ServerURL: w.api.URL, Log: quiet, Now: w.clock.Now}))
	t.Cleanup(w.px.Close)
	if _, err := runner.Runners.Heartbeat(ctx, connect.NewRequest(&covev1.HeartbeatRequest{Capabilities: &covev1.RunnerCapabilities{
		MaxEnvironments: 8, ProxyUrl: w.px.URL, Classes: []*covev1.EnvironmentClass{{Id: "default"}}}})); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) client(user string) *apiclient.Clients {
	return apiclient.New(http.DefaultClient, w.api.URL, w.toks[user])
}

// create makes user's environment name and runs it on the runner.
func (w *world) create(t *testing.T, user, name string) *covev1.Environment {
	t.Helper()
	cr, err := w.client(user).Environments.CreateEnvironment(context.Background(), connect.NewRequest(&covev1.CreateEnvironmentRequest{Name: name,
		Spec: &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: "https://git.test/" + name + ".git"}}}))
	if err != nil {
		t.Fatal(err)
	}
	env := cr.Msg.Environment
	if env.Metadata.RunnerId == "" {
		t.Fatalf("not scheduled: %v", env.Status)
	}
	w.run.add(t, env, user)
	return env
}

func (w *world) share(t *testing.T, user, env string, port int32, vis covev1.PortVisibility) {
	t.Helper()
	if _, err := w.client(user).Environments.SharePort(context.Background(), connect.NewRequest(&covev1.SharePortRequest{
		Id: env, Port: port, Visibility: vis})); err != nil {
		t.Fatal(err)
	}
	w.clock.Add(time.Minute) // past cached answers
}

// get sends a request through the proxy as who (a token or nothing).
func (w *world) get(t *testing.T, path, who string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", w.px.URL+path, nil)
	if w.toks[who] != "" {
		req.Header.Set("Authorization", "Bearer "+w.toks[who])
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// browse is a browser (with Fetch Metadata) opening path on the proxy:
// sent to log in, who pastes their token, and the browser follows on.
func (w *world) browse(t *testing.T, path, who string) (int, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}
	navigate := func(req *http.Request) (*http.Response, error) {
		req.Header.Set("Accept", "text/html")
		req.Header.Set("Sec-Fetch-Mode", "navigate")
		req.Header.Set("Sec-Fetch-Dest", "document")
		return cl.Do(req)
	}
	req, _ := http.NewRequest("GET", w.px.URL+path, nil)
	resp, err := navigate(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/login" {
		t.Fatalf("%s: browser not sent to login: %d %v", who, resp.StatusCode, resp.Request.URL)
	}
	form := url.Values{"token": {w.toks[who]}, "next": {resp.Request.URL.Query().Get("next")}}
	req, _ = http.NewRequest("POST", w.api.URL+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = navigate(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
