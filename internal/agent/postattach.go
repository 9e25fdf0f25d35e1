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
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

const postAttachStage = "postAttachCommand"

// attachCommand is one postAttachCommand, in the JSON form of
// lifecycle.Command (Shell: string form, run with /bin/sh -c; Args: array
// form, no shell; Parallel: object form, members run concurrently). The
// lifecycle package is not imported: its tests run this agent.
type attachCommand struct {
	Shell    string
	Args     []string
	Parallel map[string]attachCommand
	Origin   string
}

func (c attachCommand) isZero() bool {
	return c.Shell == "" && len(c.Args) == 0 && len(c.Parallel) == 0
}

// loadPostAttach reads the postAttachCommand list. A missing file (or no
// path) means no commands.
func loadPostAttach(path string) ([]attachCommand, error) {
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
	var cmds []attachCommand
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

// runPostAttach runs the postAttachCommand list like the lifecycle package
// runs a stage: in order, a header per command, output to out, stopping at
// the first failure. Failures are reported to out and never returned: the
// spec lets the user attach anyway.
func (s *session) runPostAttach(ctx context.Context, x attachExec, out io.Writer) {
	cmds, err := loadPostAttach(s.a.cfg.PostAttachPath)
	if err != nil {
		s.log.Warn("post attach", "err", err)
		fmt.Fprintf(out, "cove: %v\n", err)
		return
	}
	out = &lockedWriter{w: out}
	for _, c := range cmds {
		if c.isZero() {
			continue
		}
		origin := c.Origin
		if origin == "" {
			origin = "devcontainer.json"
		}
		fmt.Fprintf(out, "Running the %s from %s...\n", postAttachStage, origin)
		if len(c.Parallel) == 0 {
			fmt.Fprintf(out, "$ %s\n", describeAttach(c))
			if !s.runAttachOne(ctx, x, "", c, out) {
				return
			}
			continue
		}
		names := make([]string, 0, len(c.Parallel))
		for n, sub := range c.Parallel {
			if !sub.isZero() {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		for _, n := range names {
			fmt.Fprintf(out, "[%s] $ %s\n", n, describeAttach(c.Parallel[n]))
		}
		ok := make([]bool, len(names))
		var wg sync.WaitGroup
		for i, n := range names {
			sub := c.Parallel[n]
			sub.Parallel = nil // strings and arrays only
			wg.Go(func() {
				pw := &prefixWriter{w: out, prefix: "[" + n + "] "}
				ok[i] = s.runAttachOne(ctx, x, n, sub, pw)
				pw.Flush()
			})
		}
		wg.Wait()
		if slices.Contains(ok, false) {
			return
		}
	}
}

// runAttachOne runs a string or array command and reports its success,
// writing a failure message to out.
func (s *session) runAttachOne(ctx context.Context, x attachExec, name string, c attachCommand, out io.Writer) bool {
	what := postAttachStage
	if name != "" {
		what = fmt.Sprintf("%s %q", postAttachStage, name)
	}
	code, err := s.execAttach(ctx, x, c, out)
	switch {
	case ctx.Err() != nil:
		return false
	case err != nil:
		fmt.Fprintf(out, "cove: %v\n%s could not run: %s\n", err, what, describeAttach(c))
		s.log.Warn("post attach", "command", describeAttach(c), "err", err)
		return false
	case code != 0:
		fmt.Fprintf(out, "%s failed with exit code %d: %s\n", what, code, describeAttach(c))
		s.log.Info("post attach failed", "command", describeAttach(c), "code", code)
		return false
	}
	return true
}

// execAttach runs one command through the process table and returns its
// exit code (128+n for signal n).
func (s *session) execAttach(ctx context.Context, x attachExec, c attachCommand, out io.Writer) (int, error) {
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
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
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

// describeAttach renders a command as the user wrote it.
func describeAttach(c attachCommand) string {
	if len(c.Args) == 0 {
		return c.Shell
	}
	q := make([]string, len(c.Args))
	for i, a := range c.Args {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`;&|<>()*?[]#~!{}") {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

// crlfWriter turns "\n" into "\r\n", as a terminal's output processing would.
type crlfWriter struct{ w io.Writer }

func (c crlfWriter) Write(p []byte) (int, error) {
	if _, err := c.w.Write(bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n"))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// lockedWriter serializes writes from commands running in parallel.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter prefixes every line with prefix and writes whole lines only,
// so parallel commands' lines do not interleave.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		if _, err := p.w.Write(append([]byte(p.prefix), p.buf[:i+1]...)); err != nil {
			return len(b), err
		}
		p.buf = p.buf[i+1:]
	}
}

// Flush writes a final partial line.
func (p *prefixWriter) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		p.w.Write(append(append([]byte(p.prefix), p.buf...), '\n'))
		p.buf = nil
	}
}
