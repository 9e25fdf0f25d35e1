// Package agentclient is the runner's client for the agent inside an
// environment: it connects over the unix socket the runner provides,
// authenticates with the runner's agent key, and offers the agent's
// services to the rest of the runner — the stream of listening ports and
// TCP connections to addresses inside the environment.
package agentclient

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/covedev/cove/internal/agent/agentproto"
	"golang.org/x/crypto/ssh"
)

// Port is a TCP port something listens on inside the environment.
type Port = agentproto.Port

// Endpoint is where one environment's agent listens and how the runner
// proves who it is to that agent and checks the agent's identity.
type Endpoint struct {
	// Socket is the agent's unix socket: a path only the runner can reach
	// (never inside a directory the environment can write).
	Socket string
	// Signer is this environment's own client key: the agent accepts it
	// and no other environment's agent does.
	Signer ssh.Signer
	// HostKey is the only host key accepted from the agent: reaching
	// another environment's agent fails the handshake.
	HostKey ssh.PublicKey
}

// Client is one SSH connection to an environment's agent. It is safe for
// concurrent use.
type Client struct {
	ssh  *ssh.Client
	done chan struct{} // closed when the connection is gone
	err  error         // why, once done is closed

	ep Endpoint

	mu     sync.Mutex
	closed bool
	users  map[string]*ssh.Client // connections logged in as another user (Exec)
}

// Dial connects to the agent at ep, authenticates with ep.Signer and
// accepts only ep.HostKey.
func Dial(ctx context.Context, ep Endpoint) (*Client, error) {
	conn, err := dialSSH(ctx, ep, agentproto.DefaultUser)
	if err != nil {
		return nil, err
	}
	cl := &Client{ssh: conn, done: make(chan struct{}), ep: ep}
	go func() {
		cl.err = cl.ssh.Wait()
		close(cl.done)
	}()
	return cl, nil
}

// dialSSH connects to the agent and logs in as user (see agentproto.DefaultUser).
func dialSSH(ctx context.Context, ep Endpoint, user string) (*ssh.Client, error) {
	conn, chans, reqs, err := DialConn(ctx, ep, DialOptions{User: user})
	if err != nil {
		return nil, err
	}
	return ssh.NewClient(conn, chans, reqs), nil
}

// Close closes the connection; streams and connections on it end.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	users := c.users
	c.users = nil
	c.mu.Unlock()
	for _, u := range users {
		u.Close()
	}
	return c.ssh.Close()
}

// Done is closed when the connection to the agent is gone.
func (c *Client) Done() <-chan struct{} { return c.done }

// WatchPorts streams the environment's listening TCP ports: fn gets the
// full list at once and again after every change, from one goroutine. It
// blocks until ctx is done (and then returns ctx.Err()) or the stream or
// connection fails.
func (c *Client) WatchPorts(ctx context.Context, fn func([]Port)) error {
	ch, reqs, err := c.ssh.OpenChannel(agentproto.PortsChannel, nil)
	if err != nil {
		return fmt.Errorf("open ports stream: %w", err)
	}
	go ssh.DiscardRequests(reqs)
	stop := context.AfterFunc(ctx, func() { ch.Close() })
	defer stop()
	defer ch.Close()

	sc := bufio.NewScanner(ch)
	sc.Buffer(make([]byte, 0, 4096), agentproto.MaxPortsLine)
	for sc.Scan() {
		var ports []Port
		if err := json.Unmarshal(sc.Bytes(), &ports); err != nil {
			return fmt.Errorf("ports stream: %w", err)
		}
		fn(ports)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("ports stream: %w", err)
	}
	return fmt.Errorf("ports stream: %w", io.ErrUnexpectedEOF)
}

// DialTCP opens a TCP connection to addr (host:port) from inside the
// environment, through the agent (an SSH direct-tcpip channel), so it
// reaches ports bound to the environment's loopback too.
func (c *Client) DialTCP(ctx context.Context, addr string) (net.Conn, error) {
	conn, err := c.ssh.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s in environment: %w", addr, err)
	}
	return conn, nil
}
