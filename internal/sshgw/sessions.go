package sshgw

import (
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// What users do through the gateway, for auto-stop (docs/autostop.md):
// sessions that keep an environment alive while they are open (a session
// with a pty, a connection that forwards ports), input typed into a
// terminal, and commands started. Keep-alive packets and window changes
// are not activity: a forgotten client sends them for ever.

// Sessions is told what users do through the gateway. Its methods must
// not block: they run on the connection's goroutines.
type Sessions interface {
	// Attach is called when something that keeps envID alive opens: a
	// session with a pty, or a connection's first port forward. The
	// returned function is called once when it ends.
	Attach(envID string, s Session) (detach func())
	// Activity is called for a user's action: Kind "terminal" (input typed
	// into a pty session; at most once a second per session) or "command"
	// (a session started without a pty).
	Activity(envID, user, kind string)
}

// Session is an attached session.
type Session struct {
	// User is the user's name from the certificate ("" when the
	// certificate names none).
	User string
	// Kind is "pty" or "forward".
	Kind string
	// Notice writes text to the user's terminal (nil for a forward). It
	// blocks while the client does not read: call it on a goroutine of
	// its own; it fails once the session ended.
	Notice func(text string) error
}

// UserNameExtension is the user certificate extension carrying the user's
// name, for what people read (activity, logs); never for authorization.
const UserNameExtension = "user-name@cove"

// inputEvery is how often typing in one session is reported.
const inputEvery = time.Second

// SetSessions makes the gateway tell s what users do on connections
// accepted from now on (nil: nobody).
func (g *Gateway) SetSessions(s Sessions) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sessions = s
}

func (g *Gateway) sessionObserver() Sessions {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sessions
}

// connSessions is one user connection's part: its forward attachment.
type connSessions struct {
	obs   Sessions
	envID string
	user  string

	mu      sync.Mutex
	fwdDone func() // detach of the connection's forwarding, once attached
	ended   bool
}

// forwarding notes a port forward on the connection: the first attaches it.
func (c *connSessions) forwarding() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fwdDone == nil && !c.ended {
		c.fwdDone = c.obs.Attach(c.envID, Session{User: c.user, Kind: "forward"})
	}
}

// end detaches the connection's forwarding.
func (c *connSessions) end() {
	if c == nil {
		return
	}
	c.mu.Lock()
	done := c.fwdDone
	c.ended = true
	c.mu.Unlock()
	if done != nil {
		done()
	}
}

// sessionChannel watches one user session channel: the pty request that
// attaches it, and input typed into it.
type sessionChannel struct {
	ssh.Channel // the user's side
	conn        *connSessions
	writeMu     sync.Mutex // orders the agent's output and notices

	mu        sync.Mutex
	pty       bool
	started   bool
	detach    func()
	lastInput time.Time
}

func (c *connSessions) session(ch ssh.Channel) *sessionChannel {
	return &sessionChannel{Channel: ch, conn: c}
}

// filter wraps a request filter: a pty request that passes attaches the
// session; a shell or exec without a pty is a command.
func (s *sessionChannel) filter(allow func(*ssh.Request) bool) func(*ssh.Request) bool {
	return func(r *ssh.Request) bool {
		if !allow(r) {
			return false
		}
		switch r.Type {
		case "pty-req":
			s.mu.Lock()
			if !s.pty {
				s.pty = true
				s.detach = s.conn.obs.Attach(s.conn.envID, Session{User: s.conn.user, Kind: "pty", Notice: s.notice})
			}
			s.mu.Unlock()
		case "shell", "exec", "subsystem":
			s.mu.Lock()
			first, pty := !s.started, s.pty
			s.started = true
			s.mu.Unlock()
			if first && !pty {
				s.conn.obs.Activity(s.conn.envID, s.conn.user, "command")
			}
		}
		return true
	}
}

// Read is the user's input: typing into a pty session is activity.
func (s *sessionChannel) Read(p []byte) (int, error) {
	n, err := s.Channel.Read(p)
	if n > 0 {
		now := time.Now()
		s.mu.Lock()
		report := s.pty && now.Sub(s.lastInput) >= inputEvery
		if report {
			s.lastInput = now
		}
		s.mu.Unlock()
		if report {
			s.conn.obs.Activity(s.conn.envID, s.conn.user, "terminal")
		}
	}
	return n, err
}

// Write is the agent's output to the user, never interleaved with a
// notice.
func (s *sessionChannel) Write(p []byte) (int, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.Channel.Write(p)
}

func (s *sessionChannel) notice(text string) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	_, err := s.Channel.Write([]byte(text))
	return err
}

// end detaches the session once its channel closed.
func (s *sessionChannel) end() {
	s.mu.Lock()
	done := s.detach
	s.detach = nil
	s.mu.Unlock()
	if done != nil {
		done()
	}
}
