package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

// bWriters is ioprobe's write mode running in B through `cove ssh`, driven
// over its standard input.
type bWriters struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // its standard output, a line at a time; closed at its end
	exited chan struct{}
	errMu  sync.Mutex
	stderr bytes.Buffer
}

// mark is one of the writers' "mark" or "done" lines.
type mark struct {
	at              time.Duration // since the writers started
	written, synced int64
}

// startWriters starts B's writers with an fsync every fsyncEvery bytes (0:
// never).
func (s *session) startWriters(fsyncEvery int64) (*bWriters, error) {
	o := s.f.o
	command := fmt.Sprintf("exec %s write -dir %s -writers %d -block %d -file-size %d -keep %d -fsync-every %d",
		probePath, s.wsB, o.writers, o.block, o.fileSize, o.keep, fsyncEvery)
	// Not bound to a context: stop ends it, also after an interrupt.
	w := &bWriters{cmd: exec.Command(s.cv.Bin, "ssh", envB, "--", command), lines: make(chan string, 16), exited: make(chan struct{})}
	w.cmd.Env = s.cv.Env()
	w.cmd.Stderr = &lockedWriter{mu: &w.errMu, w: &w.stderr}
	var err error
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the writers in %s: %w", envB, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
		close(w.lines)
		_ = w.cmd.Wait() // only once stdout is read to its end: Wait closes it
		close(w.exited)
	}()
	return w, nil
}

// mark asks the writers what they have done so far.
func (w *bWriters) mark(ctx context.Context) (mark, error) {
	if _, err := io.WriteString(w.stdin, "mark\n"); err != nil {
		return mark{}, w.failed(fmt.Errorf("ask the writers: %w", err))
	}
	return w.next(ctx, "mark")
}

// warmUp waits until the writers have written want bytes and at least
// least has passed, polling them twice a second; after most it goes on
// (saying so) whatever they wrote.
func (w *bWriters) warmUp(ctx context.Context, want int64, least, most time.Duration) error {
	t0 := time.Now()
	for {
		if err := pause(ctx, 500*time.Millisecond); err != nil {
			return err
		}
		m, err := w.mark(ctx)
		if err != nil {
			return err
		}
		since := time.Since(t0)
		if m.written >= want && since >= least {
			benchkit.Progress("B's writers wrote %s in %s", mib(m.written), since.Round(time.Second))
			return nil
		}
		if since >= most {
			benchkit.Progress("B's writers wrote only %s of %s in %s: measuring anyway", mib(m.written), mib(want), since.Round(time.Second))
			return nil
		}
	}
}

// next waits for the writers' next line, which must start with what.
func (w *bWriters) next(ctx context.Context, what string) (mark, error) {
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	select {
	case line, ok := <-w.lines:
		if !ok {
			return mark{}, w.failed(errors.New("the writers ended"))
		}
		m, err := parseMark(line, what)
		if err != nil {
			return mark{}, w.failed(err)
		}
		return m, nil
	case <-ctx.Done():
		return mark{}, ctx.Err()
	case <-t.C:
		return mark{}, w.failed(fmt.Errorf("no %q line from the writers in a minute", what))
	}
}

// stop ends the writers (the end of their input), which remove their
// files, and waits until `cove ssh` has exited; it kills it if the writers
// do not stop within two minutes.
func (w *bWriters) stop() error {
	_ = w.stdin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := w.next(ctx, "done")
	select {
	case <-w.exited:
	case <-ctx.Done():
		_ = w.cmd.Process.Kill()
		<-w.exited
		err = errors.Join(err, fmt.Errorf("the writers in %s did not stop within two minutes: killed cove ssh", envB))
	}
	if err == nil && !w.cmd.ProcessState.Success() {
		err = w.failed(fmt.Errorf("cove ssh: %s", w.cmd.ProcessState))
	}
	return err
}

// failed adds the writers' standard error to err.
func (w *bWriters) failed(err error) error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	if msg := strings.TrimSpace(w.stderr.String()); msg != "" {
		return fmt.Errorf("writers in %s: %w: %s", envB, err, msg)
	}
	return fmt.Errorf("writers in %s: %w", envB, err)
}

// parseMark parses "WHAT NS WRITTEN SYNCED".
func parseMark(line, what string) (mark, error) {
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != what {
		return mark{}, fmt.Errorf("unexpected line %q from the writers, want %q and three numbers", line, what)
	}
	var v [3]int64
	for i := range v {
		n, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil || n < 0 {
			return mark{}, fmt.Errorf("unexpected line %q from the writers: %q is not a count", line, f[i+1])
		}
		v[i] = n
	}
	return mark{at: time.Duration(v[0]), written: v[1], synced: v[2]}, nil
}

// parseLatencies parses ioprobe fsync's output: nanoseconds, one a line.
func parseLatencies(out []byte) ([]time.Duration, error) {
	var lat []time.Duration
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		n, err := strconv.ParseInt(line, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("unexpected line %q: want a latency in nanoseconds", line)
		}
		lat = append(lat, time.Duration(n))
	}
	return lat, nil
}

// parseDiskWritten reads the bytes written from a block device's stat
// file (the 7th field counts 512-byte sectors, whatever the disk's own
// sector size).
func parseDiskWritten(b []byte) (uint64, error) {
	f := strings.Fields(string(b))
	if len(f) < 7 {
		return 0, fmt.Errorf("stat %q: want at least 7 fields", strings.TrimSpace(string(b)))
	}
	n, err := strconv.ParseUint(f[6], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: sectors written %q: %w", f[6], err)
	}
	return n * 512, nil
}

// lockedWriter serialises writes to w (exec copies stderr in a goroutine
// of its own).
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
