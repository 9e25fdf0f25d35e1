package agent

import (
	"log/slog"
	"os"
	"sync"
	"syscall"

	"github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// ptyRequest is the payload of a "pty-req" request (RFC 4254 6.2).
type ptyRequest struct {
	Term    string
	Columns uint32
	Rows    uint32
	Width   uint32
	Height  uint32
	Modes   string
}

// windowChange is the payload of a "window-change" request (RFC 4254 6.7).
type windowChange struct {
	Columns uint32
	Rows    uint32
	Width   uint32
	Height  uint32
}

// session is one SSH session channel. gliderlabs/ssh's own session type is
// not used because it rewrites "\n" to "\r\n" in pty output, which breaks
// full-screen programs, and cannot report exit signals.
type session struct {
	a    *agent
	ch   gossh.Channel
	conn *gossh.ServerConn
	log  *slog.Logger

	mu      sync.Mutex
	env     []string    // sent by the client
	pty     *ptyRequest // nil without a pty
	started bool
	proc    *proc    // once started
	master  *os.File // pty master once started

	closed chan struct{} // closed once the channel's requests end (the channel is gone)
}

// handleSession serves a "session" channel.
func (a *agent) handleSession(srv *ssh.Server, conn *gossh.ServerConn, newChan gossh.NewChannel, ctx ssh.Context) {
	ch, reqs, err := newChan.Accept()
	if err != nil {
		a.log.Debug("accept session", "err", err)
		return
	}
	a.sessions.Add(1)
	defer a.sessions.Add(-1)
	s := &session{a: a, ch: ch, conn: conn, log: a.log.With("session", ctx.SessionID()[:8]), closed: make(chan struct{})}
	for req := range reqs {
		var ok bool
		var then func()
		switch req.Type {
		case "shell", "exec", "subsystem":
			ok, then = s.start(req.Type, req.Payload)
		default:
			ok = s.handleRequest(req)
		}
		if req.WantReply {
			req.Reply(ok, nil)
		}
		if then != nil {
			// Output starts only after the request has been answered.
			then()
		}
	}
	close(s.closed)
	// The channel is gone: hang up a process that is still running, as a
	// terminal hangup would.
	s.mu.Lock()
	pr := s.proc
	s.mu.Unlock()
	if pr != nil {
		a.procs.signal(pr, syscall.SIGHUP, true)
	}
}

// handleRequest handles one channel request and reports success.
func (s *session) handleRequest(req *gossh.Request) bool {
	switch req.Type {
	case "env":
		var kv struct{ Name, Value string }
		if err := gossh.Unmarshal(req.Payload, &kv); err != nil {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.started {
			return false
		}
		s.env = append(s.env, kv.Name+"="+kv.Value)
		return true

	case "pty-req":
		var p ptyRequest
		if err := gossh.Unmarshal(req.Payload, &p); err != nil {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.started || s.pty != nil {
			return false
		}
		s.pty = &p
		return true

	case "window-change":
		var w windowChange
		if err := gossh.Unmarshal(req.Payload, &w); err != nil {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.pty == nil {
			return false
		}
		s.pty.Columns, s.pty.Rows, s.pty.Width, s.pty.Height = w.Columns, w.Rows, w.Width, w.Height
		if s.master != nil {
			if err := setWinsize(s.master, w.Columns, w.Rows, w.Width, w.Height); err != nil {
				s.log.Debug("resize pty", "err", err)
			}
		}
		return true

	case "signal":
		var p struct{ Signal string }
		if err := gossh.Unmarshal(req.Payload, &p); err != nil {
			return false
		}
		sig, ok := sshSignals[p.Signal]
		s.mu.Lock()
		pr := s.proc
		s.mu.Unlock()
		if !ok || pr == nil {
			return false
		}
		return s.a.procs.signal(pr, sig, false) == nil

	default:
		// auth-agent-req@openssh.com, x11-req, break, ...: not supported.
		return false
	}
}
