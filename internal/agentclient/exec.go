package agentclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/covedev/cove/internal/agent/agentproto"
	"golang.org/x/crypto/ssh"
)

// ExecRequest is a command to run inside the environment. Exactly one of
// Args and Shell is set.
type ExecRequest struct {
	// User runs the command as this user (name or uid, as in an OCI image
	// config); "" means the environment's configured user.
	User string
	// Env is added to the session's environment (KEY=VALUE), over the
	// image's and the probed ones (remoteEnv).
	Env []string
	// Dir is the working directory (absolute, must exist); "" means the
	// agent's default (its WorkDir, else the user's home).
	Dir string
	// Args is an argv, executed without a shell; Args[0] is looked up in
	// the session's PATH.
	Args []string
	// Shell is a command run with /bin/sh -c.
	Shell string
	// UserEnvProbe is one of the agentproto.Probe* values ("" = none).
	UserEnvProbe string

	Stdin          io.Reader // nil: no input
	Stdout, Stderr io.Writer // nil: discarded
}

// Exec runs a command inside the environment and returns its exit code (128+n
// for a process killed by signal n). err is set only when the command could
// not be run or its status is unknown; when ctx ends the command is sent
// SIGTERM and hung up, and ctx.Err() is returned.
func (c *Client) Exec(ctx context.Context, req ExecRequest) (int, error) {
	var argv []string
	switch {
	case len(req.Args) > 0 && req.Shell != "":
		return -1, errors.New("exec: both Args and Shell set")
	case len(req.Args) > 0:
		argv = req.Args
	case req.Shell != "":
		argv = []string{"/bin/sh", "-c", req.Shell}
	default:
		return -1, errors.New("exec: no command")
	}
	payload, err := json.Marshal(argv)
	if err != nil {
		return -1, err
	}
	conn, err := c.conn(ctx, req.User)
	if err != nil {
		return -1, err
	}
	sess, err := conn.NewSession()
	if err != nil {
		return -1, fmt.Errorf("exec: open session: %w", err)
	}
	defer sess.Close()
	env := append([]string{agentproto.EnvExecArgv + "=1"}, req.Env...)
	if req.Dir != "" {
		env = append(env, agentproto.EnvWorkDir+"="+req.Dir)
	}
	if req.UserEnvProbe != "" {
		env = append(env, agentproto.EnvUserEnvProbe+"="+req.UserEnvProbe)
	}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return -1, fmt.Errorf("exec: bad environment entry %q", kv)
		}
		if err := sess.Setenv(k, v); err != nil {
			return -1, fmt.Errorf("exec: set %s: %w", k, err)
		}
	}
	sess.Stdin, sess.Stdout, sess.Stderr = req.Stdin, req.Stdout, req.Stderr
	if req.Stdout != nil && req.Stderr != nil {
		// The session copies each stream in its own goroutine, and callers
		// often pass one buffer for both (whose ReadFrom is not safe for
		// concurrent use): serialise the writes.
		var mu sync.Mutex
		sess.Stdout = lockedWriter{&mu, req.Stdout}
		sess.Stderr = lockedWriter{&mu, req.Stderr}
	}
	if err := sess.Start(string(payload)); err != nil {
		return -1, fmt.Errorf("exec: %w", err)
	}
	stop := context.AfterFunc(ctx, func() {
		_ = sess.Signal(ssh.SIGTERM)
		_ = sess.Close()
	})
	defer stop()
	err = sess.Wait()
	if ctx.Err() != nil {
		return -1, ctx.Err()
	}
	var ee *ssh.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		if ee.Signal() != "" {
			return 128 + signalNumber(ee.Signal()), nil
		}
		return ee.ExitStatus(), nil
	default:
		return -1, fmt.Errorf("exec: %w", err)
	}
}

// conn returns the connection logged in as user, dialing it when needed.
func (c *Client) conn(ctx context.Context, user string) (*ssh.Client, error) {
	if user == "" || user == agentproto.DefaultUser {
		return c.ssh, nil
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("agent connection closed")
	}
	if u, ok := c.users[user]; ok {
		c.mu.Unlock()
		if _, _, err := u.SendRequest("keepalive@openssh.com", true, nil); err == nil {
			return u, nil
		}
		u.Close()
		c.mu.Lock()
		if c.users[user] == u {
			delete(c.users, user)
		}
	}
	c.mu.Unlock()

	u, err := dialSSH(ctx, c.ep, user)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		u.Close()
		return nil, errors.New("agent connection closed")
	}
	if old, ok := c.users[user]; ok { // a concurrent dial won
		u.Close()
		return old, nil
	}
	if c.users == nil {
		c.users = map[string]*ssh.Client{}
	}
	c.users[user] = u
	return u, nil
}

// signalNumber maps an RFC 4254 signal name to its Linux number.
func signalNumber(name string) int {
	switch name {
	case "HUP":
		return 1
	case "INT":
		return 2
	case "QUIT":
		return 3
	case "ILL":
		return 4
	case "ABRT":
		return 6
	case "FPE":
		return 8
	case "KILL":
		return 9
	case "USR1":
		return 10
	case "SEGV":
		return 11
	case "USR2":
		return 12
	case "PIPE":
		return 13
	case "ALRM":
		return 14
	case "TERM":
		return 15
	}
	return 0
}

// lockedWriter writes to w holding mu (and hides w's ReadFrom, so that
// io.Copy goes through Write).
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
