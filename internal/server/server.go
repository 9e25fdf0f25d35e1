// Package server is cove's control plane: the Connect API (gRPC and JSON
// over HTTP), authentication, the scheduler that assigns environments to
// runners, and controllers (runner liveness, scheduling retries). State lives
// in a store.Store; the server never sees repository content.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/sshgw"
	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

// Config configures a Server.
type Config struct {
	Store   store.Store
	DataDir string // holds the SSH CA keys
	Log     *slog.Logger
	// A runner without a heartbeat for this long is INACTIVE.
	RunnerTimeout time.Duration
	// Lifetime of user SSH certificates.
	SSHCertTTL time.Duration
	// Class given to environments created without one.
	DefaultClass string
	// PublicURL is the server's external base URL, used in browser
	// redirects (port login); empty derives it from the request.
	PublicURL string
	// AllowPrivateImages lets members name images on loopback, private or
	// link-local registries in spec.defaultImage (owners always may).
	AllowPrivateImages bool
	// Limits per user; the zero value means unlimited (DefaultLimits has
	// the flags' defaults).
	Limits Limits
	// RequestBodyTimeout bounds how long a client may take to send a
	// request body (0: DefaultRequestBodyTimeout).
	RequestBodyTimeout time.Duration
	// MaxRunnerEnvironments bounds the maxEnvironments a runner may
	// advertise (0: DefaultMaxRunnerEnvironments).
	MaxRunnerEnvironments int
	// DefaultInactivity and DefaultMaxLifetime are the timeouts of an
	// environment created without any (autostop.go): inactivity 0 means
	// DefaultInactivityTimeout, negative never; lifetime 0 or negative
	// means none.
	DefaultInactivity, DefaultMaxLifetime time.Duration
	// AutoStopInterval is how often environments past their deadline are
	// looked for (0: DefaultAutoStopInterval).
	AutoStopInterval time.Duration
	Now              func() time.Time
	// BackupStorage is where backups go, as runners get it (nil: backups
	// disabled); BackupStore the server's own handle on it
	// (OpenBackupStorage), for retention and garbage collection.
	BackupStorage *covev1.BackupStorage
	BackupStore   blob.Store
	// RescheduleAfter: an environment whose runner has been INACTIVE this
	// long is moved to another runner from its latest backup (desired
	// RUNNING), or its deletion completed without the runner (desired
	// DELETED). 0: never.
	RescheduleAfter time.Duration
}

// Server implements the cove API.
type Server struct {
	store  store.Store
	log    *slog.Logger
	userCA *sshgw.CA
	hostCA *sshgw.CA
	cfg    Config
	now    func() time.Time
	// portKey signs port session tokens and browser login cookies.
	portKey []byte
	// quotaMu serializes per-user capacity checks with the write they
	// allow; streams counts open watch streams.
	quotaMu sync.Mutex
	streams streamLimiter
	// salvageLogged: when each (environment, runner)'s failing salvage was
	// last logged (releases.go).
	salvageLogged logThrottle
}

// New loads (or creates) the SSH CAs and returns a server.
func New(cfg Config) (*Server, error) {
	if cfg.RunnerTimeout == 0 {
		cfg.RunnerTimeout = 30 * time.Second
	}
	if cfg.SSHCertTTL == 0 {
		cfg.SSHCertTTL = 30 * time.Minute
	}
	if cfg.RequestBodyTimeout <= 0 {
		cfg.RequestBodyTimeout = DefaultRequestBodyTimeout
	}
	if cfg.MaxRunnerEnvironments <= 0 {
		cfg.MaxRunnerEnvironments = DefaultMaxRunnerEnvironments
	}
	if cfg.DefaultClass == "" {
		cfg.DefaultClass = "default"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	userCA, err := sshgw.LoadOrCreateCA(filepath.Join(cfg.DataDir, "ssh_user_ca"))
	if err != nil {
		return nil, fmt.Errorf("user CA: %w", err)
	}
	hostCA, err := sshgw.LoadOrCreateCA(filepath.Join(cfg.DataDir, "ssh_host_ca"))
	if err != nil {
		return nil, fmt.Errorf("host CA: %w", err)
	}
	portKey, err := loadOrCreateKey(filepath.Join(cfg.DataDir, "port_token_key"))
	if err != nil {
		return nil, fmt.Errorf("port token key: %w", err)
	}
	return &Server{store: cfg.Store, log: cfg.Log, userCA: userCA, hostCA: hostCA, cfg: cfg, now: cfg.Now, portKey: portKey}, nil
}

// Handler serves the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	// ReadMaxBytes also bounds a message after decompression.
	opts := []connect.HandlerOption{connect.WithInterceptors(errorInterceptor(s.log)), connect.WithReadMaxBytes(MaxRequestBytes)}
	mux.Handle(covev1connect.NewEnvironmentServiceHandler(&envService{s}, opts...))
	mux.Handle(covev1connect.NewUserServiceHandler(&userService{s}, opts...))
	mux.Handle(covev1connect.NewRunnerServiceHandler(&runnerService{s}, opts...))
	s.registerPortAuth(mux)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	return s.limitRequests(s.authenticate(mux))
}

// Run runs the controllers until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	changes := s.store.Changes(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.autoStopLoop(ctx) }) // autostop.go
	for {
		if err := s.reconcileRunners(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("runner liveness", "err", err)
		}
		if err := s.schedulePending(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("schedule", "err", err)
		}
		if err := s.reconcileMoves(ctx); err != nil && ctx.Err() == nil { // moves.go
			s.log.Error("moves", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-changes:
		}
	}
}

func errorInterceptor(log *slog.Logger) connect.Interceptor {
	return &errInterceptor{log: log}
}

type errInterceptor struct{ log *slog.Logger }

func (e *errInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		return resp, toConnect(e.log, err)
	}
}

func (e *errInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (e *errInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return toConnect(e.log, next(ctx, conn))
	}
}
