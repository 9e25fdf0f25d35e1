package agent

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

type agent struct {
	cfg   Config
	log   *slog.Logger
	procs *procTable

	sessions atomic.Int64 // session channels being served
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
			"session":      a.handleSession,
			"direct-tcpip": a.handleDirectTCPIP,
			PortsChannel:   a.handlePorts,
		},
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
