// Package servertest runs a real cove API server inside the test's
// process: server.New over a SQLite store in a temporary directory, served
// by server.NewHTTPServer (the daemon's http.Server, limits included) on a
// loopback port, with its controllers running. It bootstraps an owner and
// has helpers to create members, tokens, join tokens and joined runners
// through the API, as a user or runner would.
//
// Everything it creates (listener, server, store, files) is gone when the
// test ends.
package servertest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/store"
	"github.com/covedev/cove/internal/store/sqlite"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

// Options configures Start. The zero value is a working server with an
// owner called "admin".
type Options struct {
	// Configure may change the server's configuration before server.New
	// (limits, Now, DefaultClass ...). Store, DataDir and Log are set.
	Configure func(*server.Config)
	// AdminName is the name of the owner Start bootstraps (default
	// "admin"); NoAdmin bootstraps nobody, for tests of bootstrapping.
	AdminName string
	NoAdmin   bool
}

// Server is a running API server.
type Server struct {
	// Server is the server itself (Bootstrap, CreateJoinToken ...).
	*server.Server
	// URL is its base URL, http://127.0.0.1:port.
	URL string
	// Store is its store; DataDir its data directory (SSH CA keys).
	Store   store.Store
	DataDir string
	// Admin is the owner bootstrapped at start (nil with NoAdmin).
	Admin *User
}

// User is a user and API clients that send its token.
type User struct {
	ID, Name, Token string
	*apiclient.Clients
}

// Runner is a runner that joined the server.
type Runner struct {
	ID, Name, Token string
	// Client is the runner service, authenticated with Token.
	Client covev1connect.RunnerServiceClient
}

// Start runs a server until the end of the test.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "cove.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() }) // runs last: the server is stopped by then
	cfg := server.Config{Store: st, DataDir: dir, Log: slog.New(slog.DiscardHandler)}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := server.NewHTTPServer(srv.Handler())
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		hs.Close() // also ends open watch streams
		if err := testutil.Receive(t, served, "the HTTP server to stop"); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		if err := testutil.Receive(t, ran, "the server's controllers to stop"); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("server.Run: %v", err)
		}
	})
	s := &Server{Server: srv, URL: "http://" + ln.Addr().String(), Store: st, DataDir: dir}
	if !opts.NoAdmin {
		name := opts.AdminName
		if name == "" {
			name = "admin"
		}
		u, tok, err := srv.Bootstrap(context.Background(), name, "")
		if err != nil {
			t.Fatalf("bootstrap %s: %v", name, err)
		}
		s.Admin = &User{ID: u.ID, Name: u.Name, Token: tok, Clients: s.Client(tok)}
	}
	return s
}

// Client returns API clients that send token ("" for anonymous calls).
func (s *Server) Client(token string) *apiclient.Clients {
	return apiclient.New(http.DefaultClient, s.URL, token)
}

// CreateUser has the admin create a member called name, through the API.
func (s *Server) CreateUser(t testing.TB, name string) *User {
	t.Helper()
	resp, err := s.admin(t).Users.CreateUser(testutil.Context(t), connect.NewRequest(&covev1.CreateUserRequest{Name: name}))
	if err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	tok := resp.Msg.GetToken()
	return &User{ID: resp.Msg.GetUser().GetId(), Name: name, Token: tok, Clients: s.Client(tok)}
}

// CreateToken creates another token for u, through the API (ttl 0: the
// server's default).
func (s *Server) CreateToken(t testing.TB, u *User, name string, ttl time.Duration) string {
	t.Helper()
	resp, err := u.Users.CreateToken(testutil.Context(t), connect.NewRequest(&covev1.CreateTokenRequest{Name: name, TtlSeconds: int64(ttl / time.Second)}))
	if err != nil {
		t.Fatalf("create token for %s: %v", u.Name, err)
	}
	return resp.Msg.GetToken()
}

// JoinToken has the admin create a one-time runner join token.
func (s *Server) JoinToken(t testing.TB) string {
	t.Helper()
	resp, err := s.admin(t).Runners.CreateJoinToken(testutil.Context(t), connect.NewRequest(&covev1.CreateJoinTokenRequest{}))
	if err != nil {
		t.Fatalf("create join token: %v", err)
	}
	return resp.Msg.GetJoinToken()
}

// JoinRunner joins a runner called name with a new join token, as `cove
// runner` does on its first start (no heartbeat yet: the runner is not
// ACTIVE until it sends one).
func (s *Server) JoinRunner(t testing.TB, name string) *Runner {
	t.Helper()
	jt := s.JoinToken(t)
	resp, err := s.Client("").Runners.JoinRunner(testutil.Context(t), connect.NewRequest(&covev1.JoinRunnerRequest{JoinToken: jt, Name: name}))
	if err != nil {
		t.Fatalf("join runner %s: %v", name, err)
	}
	tok := resp.Msg.GetRunnerToken()
	return &Runner{ID: resp.Msg.GetRunnerId(), Name: name, Token: tok, Client: s.Client(tok).Runners}
}

func (s *Server) admin(t testing.TB) *User {
	t.Helper()
	if s.Admin == nil {
		t.Fatal("servertest: started with NoAdmin")
	}
	return s.Admin
}
