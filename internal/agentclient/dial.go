package agentclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/covedev/cove/internal/agent/agentproto"
	"golang.org/x/crypto/ssh"
)

// Bounds of one dial to an agent (a context with an earlier deadline
// shortens them).
const (
	dialTimeout      = 5 * time.Second
	handshakeTimeout = 10 * time.Second
)

// DialOptions are how a caller logs in to an agent.
type DialOptions struct {
	// User is the login name: agentproto.DefaultUser ("") for the
	// environment's configured user, or a user of the environment.
	User string
	// ClientVersion names the caller in the SSH handshake ("" is
	// x/crypto/ssh's default).
	ClientVersion string
}

// DialConn is the one way cove reaches an environment's agent: it connects
// to ep.Socket (a unix socket only the runner reaches), accepts no host key
// but ep.HostKey (another environment's agent fails the handshake before
// it sees the client key) and authenticates with ep.Signer. The dial and
// the handshake are bounded by ctx and by timeouts of their own. It
// returns the raw connection, for a caller that proxies channels (the SSH
// gateway); Dial wraps it in a Client.
func DialConn(ctx context.Context, ep Endpoint, opts DialOptions) (ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	if ep.Socket == "" || ep.Signer == nil || ep.HostKey == nil {
		return nil, nil, nil, errors.New("dial agent: endpoint without socket, client key or host key")
	}
	if opts.User == "" {
		opts.User = agentproto.DefaultUser
	}
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "unix", ep.Socket)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dial agent: %w", err)
	}
	deadline := time.Now().Add(handshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	// A ctx that ends during the handshake fails it at once.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	conn, chans, reqs, err := ssh.NewClientConn(c, "agent", &ssh.ClientConfig{
		User:              opts.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(ep.Signer)},
		HostKeyCallback:   ssh.FixedHostKey(ep.HostKey),
		HostKeyAlgorithms: []string{ep.HostKey.Type()},
		ClientVersion:     opts.ClientVersion,
	})
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		c.Close()
		if conn != nil {
			conn.Close()
		}
		return nil, nil, nil, fmt.Errorf("agent handshake: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	return conn, chans, reqs, nil
}
