package sshgw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/connlimit"
	"golang.org/x/crypto/ssh"
)

// Target is where an environment's SSH sessions go.
type Target struct {
	// OwnerID is the environment owner's user id; a certificate must name
	// the same owner.
	OwnerID string
	// AgentSocket is the unix socket path of the environment's agent.
	AgentSocket string
	// AgentSigner is the client key the agent accepts.
	AgentSigner ssh.Signer
	// AgentHostKey is the only host key accepted from the agent: a
	// connection that reaches another environment's agent fails.
	AgentHostKey ssh.PublicKey
	// AgentUser is the SSH user name sent to the agent; "cove" if empty.
	AgentUser string
}

// Resolver finds where an environment's agent listens. It returns an error
// if the environment is unknown or not running.
type Resolver interface {
	ResolveEnvironment(ctx context.Context, envID string) (Target, error)
}

// Config configures a Gateway.
type Config struct {
	// HostSigner is the gateway's host key.
	HostSigner ssh.Signer
	// Resolver maps environment ids to agents.
	Resolver Resolver
	// Log receives connection and authentication events; slog.Default if nil.
	Log *slog.Logger
	// Clock is used to check certificate validity; time.Now if nil.
	Clock func() time.Time
	// HandshakeTimeout bounds the SSH handshake with a user and with an
	// agent; 30s if zero. For users it is the grace time: from accept to
	// the end of authentication.
	HandshakeTimeout time.Duration
	// MaxStartups caps connections that have not finished authentication,
	// in all and from one source address (IPv4 address or IPv6 /64);
	// DefaultMaxStartups and DefaultMaxStartupsPerSource if zero, no cap
	// if negative. See limits.go.
	MaxStartups, MaxStartupsPerSource int
}

// Gateway is an SSH server that authenticates users by certificate and
// proxies their sessions to environment agents.
type Gateway struct {
	hostSigner       ssh.Signer
	resolver         Resolver
	log              *slog.Logger
	clock            func() time.Time
	handshakeTimeout time.Duration
	startups         *connlimit.Limiter

	mu         sync.Mutex
	userCAs    []ssh.PublicKey
	certSigner ssh.Signer // host key presented as a certificate; nil if none
	sessions   Sessions   // told what users do (sessions.go); nil if nobody
}

// NewGateway returns a gateway that trusts no user CA until SetUserCA.
func NewGateway(cfg Config) *Gateway {
	g := &Gateway{
		hostSigner:       cfg.HostSigner,
		resolver:         cfg.Resolver,
		log:              cfg.Log,
		clock:            cfg.Clock,
		handshakeTimeout: cfg.HandshakeTimeout,
		startups:         startupLimiter(cfg),
	}
	if g.log == nil {
		g.log = slog.Default()
	}
	if g.clock == nil {
		g.clock = time.Now
	}
	if g.handshakeTimeout <= 0 {
		g.handshakeTimeout = 30 * time.Second
	}
	return g
}

// SetUserCA replaces the set of CAs trusted to sign user certificates.
func (g *Gateway) SetUserCA(keys ...ssh.PublicKey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.userCAs = append([]ssh.PublicKey(nil), keys...)
}

// SetHostCertificate makes new connections present the host key as cert.
// A nil cert, or one whose key is not the host key, makes the gateway offer
// its plain host key only (the latter is logged as an error).
func (g *Gateway) SetHostCertificate(cert *ssh.Certificate) {
	var signer ssh.Signer
	if cert != nil && g.hostSigner != nil {
		s, err := ssh.NewCertSigner(cert, g.hostSigner)
		if err != nil {
			g.log.Error("ignoring ssh host certificate", "err", err)
		} else {
			signer = s
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.certSigner = signer
}

func (g *Gateway) snapshot() (cas []ssh.PublicKey, certSigner ssh.Signer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.userCAs, g.certSigner
}

// Serve accepts connections on ln until ctx is done or ln fails. On return,
// ln and every connection it accepted are closed and their goroutines have
// ended. It returns nil when ctx is done.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	if g.hostSigner == nil || g.resolver == nil {
		ln.Close()
		return errors.New("ssh gateway: host key and resolver are required")
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	ln = g.limitStartups(ln)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("ssh gateway accept: %w", err)
			}
			// Probably out of file descriptors: back off and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			g.log.Warn("ssh gateway accept", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		backoff = 0
		wg.Go(func() { g.serveConn(ctx, c) })
	}
}

// serveConn authenticates one user connection and proxies it to its
// environment's agent until either side goes away or ctx is done.
func (g *Gateway) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	log := g.log.With("remote", c.RemoteAddr().String())

	hctx, hcancel := context.WithTimeout(ctx, g.handshakeTimeout)
	defer hcancel()
	c.SetDeadline(time.Now().Add(g.handshakeTimeout))
	sconn, chans, reqs, err := ssh.NewServerConn(c, g.serverConfig(hctx, log))
	authenticated(c) // or failed: either way no longer a startup
	if err != nil {
		log.Debug("ssh handshake failed", "err", err)
		return
	}
	c.SetDeadline(time.Time{})
	auth, _ := sconn.Permissions.ExtraData[authKey{}].(*authResult)
	if auth == nil { // cannot happen: every successful auth sets it
		sconn.Close()
		return
	}
	log = log.With("env", auth.envID, "owner", auth.ownerID, "key_id", auth.keyID, "serial", auth.serial)

	start := time.Now()
	// Resolve again now, next to the dial: the check made when the client
	// offered its key may be long past (the client decides when it sends
	// its signature).
	agent, achans, areqs, err := g.resolveAndDial(hctx, auth)
	hcancel()
	if err != nil {
		log.Warn("ssh gateway: cannot reach environment agent", "err", err)
		refuse(sconn, chans, reqs, fmt.Sprintf("environment %s is not reachable", auth.envID))
		return
	}
	log.Info("ssh session started", "user", sconn.User(), "client", string(sconn.ClientVersion()))
	p := &proxy{log: log, user: sconn, agent: agent, perms: auth.perms}
	if obs := g.sessionObserver(); obs != nil {
		p.sess = &connSessions{obs: obs, envID: auth.envID, user: auth.userName}
	}
	p.run(chans, reqs, achans, areqs)
	p.sess.end()
	log.Info("ssh session ended", "duration", time.Since(start).Round(time.Millisecond))
}

func (g *Gateway) serverConfig(ctx context.Context, log *slog.Logger) *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		ServerVersion: "SSH-2.0-cove-gateway",
		MaxAuthTries:  6,
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			res, err := g.authenticate(ctx, key)
			if err != nil {
				log.Info("ssh authentication refused", "user", meta.User(), "key", ssh.FingerprintSHA256(key), "reason", err)
				return nil, errors.New("permission denied")
			}
			return &ssh.Permissions{ExtraData: map[any]any{authKey{}: res}}, nil
		},
	}
	_, certSigner := g.snapshot()
	if certSigner != nil {
		cfg.AddHostKey(certSigner)
	}
	cfg.AddHostKey(g.hostSigner)
	return cfg
}

// resolveAndDial finds the authenticated environment's agent and connects
// to it, checking once more that the environment belongs to the
// certificate's owner.
func (g *Gateway) resolveAndDial(ctx context.Context, auth *authResult) (ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	t, err := g.resolver.ResolveEnvironment(ctx, auth.envID)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("resolve environment: %w", err)
	}
	if err := checkTarget(t, auth.envID, auth.ownerID); err != nil {
		return nil, nil, nil, err
	}
	return g.dialAgent(ctx, t)
}

// checkTarget checks that a resolved target belongs to owner and names the
// agent completely (socket, client key, pinned host key).
func checkTarget(t Target, envID, owner string) error {
	if t.OwnerID != owner {
		return fmt.Errorf("environment %s belongs to %q, not to the certificate's owner %q", envID, t.OwnerID, owner)
	}
	if t.AgentSocket == "" || t.AgentSigner == nil || t.AgentHostKey == nil {
		return fmt.Errorf("environment %s has no agent (socket, client key and host key are required)", envID)
	}
	return nil
}

// dialAgent connects and authenticates to an environment's agent, through
// agentclient's one dialer (pinned host key, the environment's own client
// key, bounded by ctx).
func (g *Gateway) dialAgent(ctx context.Context, t Target) (ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	ep := agentclient.Endpoint{Socket: t.AgentSocket, Signer: t.AgentSigner, HostKey: t.AgentHostKey}
	return agentclient.DialConn(ctx, ep, agentclient.DialOptions{User: t.AgentUser, ClientVersion: "SSH-2.0-cove-gateway"})
}

// refuse keeps an authenticated user connection whose agent is unreachable
// open just long enough to tell the client why its channels fail.
func refuse(sconn *ssh.ServerConn, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request, msg string) {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer sconn.Close()
	wg.Go(func() { ssh.DiscardRequests(reqs) })
	timer := time.NewTimer(time.Minute)
	defer timer.Stop()
	for {
		select {
		case nc, ok := <-chans:
			if !ok {
				return
			}
			nc.Reject(ssh.ConnectionFailed, msg)
		case <-timer.C:
			return
		}
	}
}
