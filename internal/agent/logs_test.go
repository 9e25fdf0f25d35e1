package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// follower runs streamFile with follow in the background and lets the test
// decide when it looks at the file again: step returns once the follower
// has looked and copied what it found.
type follower struct {
	out     bytes.Buffer // written only while the test waits in step
	waiting chan struct{}
	resume  chan struct{}
	done    chan error
	cancel  context.CancelFunc
}

func follow(t *testing.T, path string) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	fl := &follower{waiting: make(chan struct{}), resume: make(chan struct{}), done: make(chan error, 1), cancel: cancel}
	wait := func(ctx context.Context) error {
		select {
		case fl.waiting <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case <-fl.resume:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	go func() { fl.done <- streamFile(ctx, path, &fl.out, true, wait, errors.New("missing")) }()
	t.Cleanup(func() {
		cancel()
		if err := <-fl.done; !errors.Is(err, context.Canceled) {
			t.Errorf("follow ended with %v, want context.Canceled", err)
		}
	})
	fl.await(t)
	return fl
}

// await waits until the follower has copied what it found and waits for
// its next look.
func (fl *follower) await(t *testing.T) {
	t.Helper()
	select {
	case <-fl.waiting:
	case err := <-fl.done:
		t.Fatalf("follow ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the follower never came back to wait")
	}
}

func (fl *follower) step(t *testing.T) {
	t.Helper()
	fl.resume <- struct{}{}
	fl.await(t)
}

// TestFollowAcrossCopyTruncate is R2 of the 2026-12 review, the follower's
// side: the runner caps a log by copying its newest part to <log>.1 and
// truncating it in place while the container keeps appending through its
// O_APPEND descriptor. A follower shows the rotated part first, and after a
// truncation goes on from the new beginning, even when the file has grown
// past the follower's old position before it looks again.
func TestFollowAcrossCopyTruncate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "console.log")
	if err := os.WriteFile(path+".1", []byte("rotated earlier\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The container's descriptor.
	w, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	write := func(s string) {
		t.Helper()
		if _, err := w.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	write("first line\n")

	fl := follow(t, path)
	if got, want := fl.out.String(), "rotated earlier\nfirst line\n"; got != want {
		t.Fatalf("start of follow: %q, want %q", got, want)
	}

	write("second line\n")
	fl.step(t)
	if got, want := fl.out.String(), "rotated earlier\nfirst line\nsecond line\n"; got != want {
		t.Fatalf("after an append: %q, want %q", got, want)
	}

	// Cut, then more output than the follower had read arrives before it
	// looks again: the size alone does not show the cut.
	fl.out.Reset()
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	after := "[cove] cut here\n" + strings.Repeat("after the cut\n", 8)
	write(after)
	fl.step(t)
	if got := fl.out.String(); got != after {
		t.Fatalf("after a truncation and regrowth: %q, want %q", got, after)
	}

	// A plain truncation to less than was read.
	fl.out.Reset()
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	write("short\n")
	fl.step(t)
	if got := fl.out.String(); got != "short\n" {
		t.Fatalf("after a truncation: %q, want %q", got, "short\n")
	}

	// Nothing new: nothing repeated.
	fl.out.Reset()
	fl.step(t)
	if got := fl.out.String(); got != "" {
		t.Fatalf("without new output: %q", got)
	}
}

// TestStreamRotatedFirst: without follow, the rotated part comes before the
// current log.
func TestStreamRotatedFirst(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lifecycle.log")
	missing := errors.New("no logs yet")
	var out bytes.Buffer
	if err := streamFile(context.Background(), path, &out, false, nil, missing); err != missing {
		t.Fatalf("missing log: %v", err)
	}
	if err := os.WriteFile(path+".1", []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := streamFile(context.Background(), path, &out, false, nil, missing); err != nil || out.String() != "old\nnew\n" {
		t.Fatalf("got %q, %v", out.String(), err)
	}
}
