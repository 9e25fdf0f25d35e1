package lifecycle

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/covedev/cove/internal/usererr"
)

// runStage runs cmds in order and stops at the first failure.
func runStage(ctx context.Context, r Runner, name string, cmds []Command, log io.Writer) (*Failure, error) {
	for _, c := range cmds {
		if c.IsZero() {
			continue
		}
		fmt.Fprintf(log, "Running the %s from %s...\n", name, origin(c))
		if len(c.Parallel) == 0 {
			fmt.Fprintf(log, "$ %s\n", describe(c))
		}
		f, err := runCommand(ctx, r, name, c, log)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			fmt.Fprintf(log, "%s\n", msgOf(err))
			return f, err
		}
	}
	return nil, nil
}

// runCommand runs one command of any form.
func runCommand(ctx context.Context, r Runner, stage string, c Command, log io.Writer) (*Failure, error) {
	if len(c.Parallel) == 0 {
		return runOne(ctx, r, stage, "", c, log)
	}
	names := make([]string, 0, len(c.Parallel))
	for n, sub := range c.Parallel {
		if !sub.IsZero() {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(log, "[%s] $ %s\n", n, describe(c.Parallel[n]))
	}
	failures := make([]*Failure, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		sub := c.Parallel[n]
		sub.Parallel = nil // the spec allows strings and arrays only
		wg.Go(func() {
			pw := &prefixWriter{w: log, prefix: "[" + n + "] "}
			failures[i], errs[i] = runOne(ctx, r, stage, n, sub, pw)
			pw.Flush()
		})
	}
	wg.Wait()
	// Report every failed member; return the first.
	var first int = -1
	for i, err := range errs {
		if err == nil {
			continue
		}
		if first < 0 {
			first = i
		} else if ctx.Err() == nil {
			fmt.Fprintf(log, "%s\n", msgOf(err))
		}
	}
	if first < 0 {
		return nil, nil
	}
	return failures[first], errs[first]
}

// runOne runs a string or array command.
func runOne(ctx context.Context, r Runner, stage, name string, c Command, out io.Writer) (*Failure, error) {
	code, err := r.Exec(ctx, Command{Shell: c.Shell, Args: c.Args, Origin: c.Origin}, out)
	what := stage
	if name != "" {
		what = fmt.Sprintf("%s %q", stage, name)
	}
	f := &Failure{Stage: stage, Name: name, Command: describe(c), ExitCode: code}
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil:
		f.ExitCode = -1
		fmt.Fprintf(out, "cove: %v\n", err)
		return f, usererr.Wrap(err, "%s could not run: %s", what, f.Command)
	case code != 0:
		return f, usererr.New("%s failed with exit code %d: %s", what, code, f.Command)
	}
	return nil, nil
}

// describe renders a command as the user wrote it.
func describe(c Command) string {
	switch {
	case len(c.Parallel) > 0:
		names := make([]string, 0, len(c.Parallel))
		for n := range c.Parallel {
			names = append(names, n)
		}
		slices.Sort(names)
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = n + ": " + describe(c.Parallel[n])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case len(c.Args) > 0:
		q := make([]string, len(c.Args))
		for i, a := range c.Args {
			q[i] = shellQuote(a)
		}
		return strings.Join(q, " ")
	}
	return c.Shell
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func msgOf(err error) string {
	if m, ok := usererr.Message(err); ok {
		return m
	}
	return err.Error()
}

// prefixWriter prefixes every line with prefix, writing whole lines only
// (so parallel commands' lines do not interleave mid-line).
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
			break
		}
		if _, err := p.w.Write(append([]byte(p.prefix), p.buf[:i+1]...)); err != nil {
			return len(b), err
		}
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
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
