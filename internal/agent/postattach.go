package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/covedev/cove/internal/lifecycle"
)

// loadPostAttach reads the postAttachCommand list (JSON of
// []lifecycle.Command). A missing file (or no path) means no commands.
func loadPostAttach(path string) ([]lifecycle.Command, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read postAttachCommand list: %w", err)
	}
	var cmds []lifecycle.Command
	if err := json.Unmarshal(data, &cmds); err != nil {
		return nil, fmt.Errorf("parse postAttachCommand list %s: %w", path, err)
	}
	return cmds, nil
}

// attachExec is where a session's postAttachCommands run: its user,
// working directory and environment.
type attachExec struct {
	acct *account
	dir  string
	env  []string
}

// runPostAttach runs the postAttachCommand list with lifecycle.RunStage:
// in order, a header per command, output to out, stopping at the first
// failure. Failures are reported to out and never returned: the spec lets
// the user attach anyway.
func (s *session) runPostAttach(ctx context.Context, x attachExec, out io.Writer) {
	cmds, err := loadPostAttach(s.a.cfg.PostAttachPath)
	if err != nil {
		s.log.Warn("post attach", "err", err)
		fmt.Fprintf(out, "cove: %v\n", err)
		return
	}
	f, err := lifecycle.RunStage(ctx, attachRunner{s: s, x: x}, lifecycle.StagePostAttach, cmds, out)
	switch {
	case err == nil, ctx.Err() != nil, f == nil:
	case f.ExitCode >= 0:
		s.log.Info("post attach failed", "command", f.Command, "code", f.ExitCode)
	default: // could not run; the cause was written to out
		s.log.Warn("post attach", "command", f.Command, "err", errors.Unwrap(err))
	}
}

// attachRunner is a lifecycle.Runner that starts commands through the
// agent's process table as the session's user, in its directory and
// environment.
type attachRunner struct {
	s *session
	x attachExec
}

// Exec runs one string or array command and returns its exit code (128+n
// for signal n). A cancelled ctx stops the command and returns ctx.Err().
func (ar attachRunner) Exec(ctx context.Context, c lifecycle.Command, out io.Writer) (int, error) {
	s, x := ar.s, ar.x
	var path string
	var argv []string
	if len(c.Args) > 0 {
		p, err := lookPath(c.Args[0], getEnv(x.env, "PATH"), x.dir)
		if err != nil {
			return 0, err
		}
		path, argv = p, c.Args
	} else {
		path, argv = defaultShell, []string{defaultShell, "-c", c.Shell}
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	pr, err := s.a.procs.start(path, argv, &os.ProcAttr{
		Dir:   x.dir,
		Env:   x.env,
		Files: []*os.File{devnull, w, w},
		Sys:   &syscall.SysProcAttr{Setsid: true, Credential: credential(x.acct)},
	})
	w.Close()
	if err != nil {
		return 0, err
	}
	copied := make(chan struct{})
	go func() { io.Copy(out, r); close(copied) }()

	select {
	case <-pr.done:
	case <-ctx.Done():
		s.a.procs.signal(pr, syscall.SIGTERM, true)
		select {
		case <-pr.done:
		case <-time.After(2 * time.Second):
			s.a.procs.signal(pr, syscall.SIGKILL, true)
			pr.wait()
		}
	}
	// A background process may hold the output open.
	select {
	case <-copied:
	case <-time.After(outputGrace):
		r.Close()
		<-copied
	}
	ws := pr.wait()
	code := ws.ExitStatus()
	if ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	return code, ctx.Err()
}

// attachThenStart runs the postAttachCommands, then launches the session's
// own process (launch runs with s.mu held) unless the channel went away
// meanwhile.
func (s *session) attachThenStart(x attachExec, launch func() (func(), error)) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	var out io.Writer = s.ch.Stderr()
	if s.pty != nil {
		out = crlfWriter{s.ch} // the client's terminal is in raw mode
	}
	s.runPostAttach(ctx, x, out)

	s.mu.Lock()
	select {
	case <-s.closed:
		s.mu.Unlock()
		return
	default:
	}
	then, err := launch()
	s.mu.Unlock()
	if err != nil {
		s.fail(err, 1)
		return
	}
	then()
}

// crlfWriter turns "\n" into "\r\n", as a terminal's output processing would.
type crlfWriter struct{ w io.Writer }

func (c crlfWriter) Write(p []byte) (int, error) {
	if _, err := c.w.Write(bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n"))); err != nil {
		return 0, err
	}
	return len(p), nil
}
