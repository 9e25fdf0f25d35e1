package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/creack/pty"
)

// chunk is output of the ssh client and when it was read.
type chunk struct {
	at time.Time
	b  []byte
}

// terminal is the OpenSSH client on a local pty, logged into an
// environment's shell.
type terminal struct {
	cmd  *exec.Cmd
	pty  *os.File
	out  chan chunk
	done chan struct{}
}

// openTerminal runs `ssh -F config -tt host` on a new pty and waits for the
// environment's shell to answer.
func openTerminal(ctx context.Context, env []string, config, host string) (*terminal, error) {
	cmd := exec.Command("ssh", "-F", config, "-tt", "-o", "LogLevel=ERROR", "-o", "ControlMaster=no", host)
	cmd.Env = append(env, "TERM=xterm")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
	if err != nil {
		return nil, fmt.Errorf("start ssh: %w", err)
	}
	t := &terminal{cmd: cmd, pty: f, out: make(chan chunk, 1024), done: make(chan struct{})}
	go t.read()
	// The marker, typed as "RE''ADY", is printed as READY only by the shell.
	if err := t.send(ctx, "echo RE''ADY\r", "READY", time.Minute); err != nil {
		t.close()
		return nil, fmt.Errorf("ssh %s: the shell did not answer: %w", host, err)
	}
	return t, nil
}

func (t *terminal) read() {
	defer close(t.done)
	for {
		buf := make([]byte, 4096)
		n, err := t.pty.Read(buf)
		if n > 0 {
			t.out <- chunk{at: time.Now(), b: buf[:n]}
		}
		if err != nil {
			return
		}
	}
}

// send writes s and waits until want appears in the output; it returns
// when the chunk holding its end was read.
func (t *terminal) send(ctx context.Context, s, want string, timeout time.Duration) error {
	_, err := t.await(ctx, s, func(seen []byte) bool { return bytes.Contains(seen, []byte(want)) }, timeout)
	return err
}

// await writes s and reads output until done(all output since) holds;
// it returns the time from the write to the chunk that made it hold.
func (t *terminal) await(ctx context.Context, s string, done func([]byte) bool, timeout time.Duration) (time.Duration, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	t0 := time.Now()
	if _, err := io.WriteString(t.pty, s); err != nil {
		return 0, err
	}
	var seen []byte
	for {
		select {
		case c := <-t.out:
			seen = append(seen, c.b...)
			if done(seen) {
				return c.at.Sub(t0), nil
			}
		case <-t.done:
			return 0, errors.New("ssh exited")
		case <-timer.C:
			return 0, fmt.Errorf("no answer after %s (output so far: %q)", timeout, tail(seen, 200))
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// drain discards output already read.
func (t *terminal) drain() {
	for {
		select {
		case <-t.out:
		default:
			return
		}
	}
}

// keystrokes types n keystrokes ("x", each erased by a backspace) and
// returns the echo latency of each "x".
func (t *terminal) keystrokes(ctx context.Context, n int, gap time.Duration) ([]time.Duration, error) {
	t.drain()
	out := make([]time.Duration, 0, n)
	for range n {
		d, err := t.await(ctx, "x", func(seen []byte) bool { return bytes.IndexByte(seen, 'x') >= 0 }, time.Minute)
		if err != nil {
			return out, fmt.Errorf("keystroke %d: %w", len(out)+1, err)
		}
		out = append(out, d)
		// Any output answers the backspace: the shell's line editor
		// erases with "\b \b" or an escape sequence.
		if _, err := t.await(ctx, "\x7f", func(seen []byte) bool { return len(seen) > 0 }, time.Minute); err != nil {
			return out, fmt.Errorf("backspace %d: %w", len(out), err)
		}
		if err := pause(ctx, gap); err != nil {
			return out, err
		}
		t.drain()
	}
	return out, nil
}

// close logs out and stops the client.
func (t *terminal) close() {
	_, _ = io.WriteString(t.pty, "\x15exit\r")
	select {
	case <-t.done:
	case <-time.After(5 * time.Second):
	}
	_ = t.cmd.Process.Kill()
	_ = t.cmd.Wait()
	t.pty.Close()
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func pause(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
