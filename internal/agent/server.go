package agent

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

type agent struct {
	cfg   Config
	log   *slog.Logger
	procs *procTable
	act   *activity // what may open or close ports (portwatch.go)

	sessions atomic.Int64 // session channels being served
	conns    connSet
}

// server builds the SSH server: public key auth against the authorized keys
// file, our own session handler, direct-tcpip forwarding, and the port
// discovery stream.
func (a *agent) server() *ssh.Server {
	return &ssh.Server{
		PublicKeyHandler: func(ctx ssh.Context, key ssh.PublicKey) bool {
			ok, err := keyAuthorized(a.cfg.AuthorizedKeysPath, key)
			if err != nil {
				a.log.Error("check authorized keys", "err", err)
				return false
			}
			if !ok {
				a.log.Warn("rejected ssh key", "user", ctx.User(), "fingerprint", gossh.FingerprintSHA256(key))
			}
			return ok
		},
		ChannelHandlers: map[string]ssh.ChannelHandler{
			"session":               a.handleSession,
			"direct-tcpip":          a.handleDirectTCPIP,
			agentproto.PortsChannel: a.handlePorts,
		},
		// gliderlabs/ssh tracks a connection only once its handshake is
		// done, so one finishing while the server closes would outlive it:
		// track them from the start.
		ConnCallback: func(_ ssh.Context, conn net.Conn) net.Conn { return a.conns.add(conn) },
		ConnectionFailedCallback: func(conn net.Conn, err error) {
			a.log.Debug("ssh connection failed", "err", err)
		},
	}
}

// handleDirectTCPIP serves ssh -L: it dials host:port from inside the
// environment and copies both ways, passing half-closes through.
func (a *agent) handleDirectTCPIP(srv *ssh.Server, conn *gossh.ServerConn, newChan gossh.NewChannel, ctx ssh.Context) {
	var d struct {
		DestAddr   string
		DestPort   uint32
		OriginAddr string
		OriginPort uint32
	}
	if err := gossh.Unmarshal(newChan.ExtraData(), &d); err != nil {
		newChan.Reject(gossh.ConnectionFailed, "bad direct-tcpip request: "+err.Error())
		return
	}
	dest := net.JoinHostPort(d.DestAddr, strconv.FormatUint(uint64(d.DestPort), 10))
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "tcp", dest)
	if err != nil {
		newChan.Reject(gossh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := newChan.Accept()
	if err != nil {
		c.Close()
		return
	}
	go gossh.DiscardRequests(reqs)
	a.act.touch() // a client of a server may make it open another port
	a.log.Debug("port forward", "dest", dest)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		io.Copy(ch, c)
		ch.CloseWrite()
	}()
	go func() {
		defer wg.Done()
		io.Copy(c, ch)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	go func() {
		wg.Wait()
		ch.Close()
		c.Close()
	}()
}

// connSet is the agent's open connections, closed together at shutdown.
type connSet struct {
	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

type trackedConn struct {
	net.Conn
	set *connSet
}

func (c *trackedConn) Close() error {
	c.set.mu.Lock()
	delete(c.set.conns, c)
	c.set.mu.Unlock()
	return c.Conn.Close()
}

// add tracks conn; after closeAll it closes conn at once.
func (s *connSet) add(conn net.Conn) net.Conn {
	tc := &trackedConn{Conn: conn, set: s}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		conn.Close()
		return tc
	}
	if s.conns == nil {
		s.conns = map[*trackedConn]struct{}{}
	}
	s.conns[tc] = struct{}{}
	return tc
}

// closeAll closes every connection, and those added later.
func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}
