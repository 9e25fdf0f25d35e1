package testutil

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeT is a testing.TB whose deadline the test chooses and whose Fatalf
// records the message and ends the goroutine, as testing.T's does.
type fakeT struct {
	testing.TB
	deadline time.Time
	fatal    string
}

func (f *fakeT) Deadline() (time.Time, bool) { return f.deadline, !f.deadline.IsZero() }
func (f *fakeT) Helper()                     {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls fn with f in a goroutine of its own (Fatalf ends it) and returns
// what Fatalf said, if anything.
func (f *fakeT) run(fn func(testing.TB)) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.fatal
}

func TestPatience(t *testing.T) {
	if got := Patience(&fakeT{TB: t}); got != MaxWait {
		t.Errorf("no deadline: %v, want MaxWait", got)
	}
	if got := Patience(&fakeT{TB: t, deadline: time.Now().Add(100 * MaxWait)}); got != MaxWait {
		t.Errorf("distant deadline: %v, want MaxWait", got)
	}
	soon := MaxWait / 2
	got := Patience(&fakeT{TB: t, deadline: time.Now().Add(soon)})
	if got <= 0 || got >= soon {
		t.Errorf("deadline in %v: %v, want less (a margin to report the failure)", soon, got)
	}
	if got := Patience(&fakeT{TB: t, deadline: time.Now().Add(-time.Second)}); got != 0 {
		t.Errorf("deadline passed: %v, want 0", got)
	}
	if got := PatienceUpTo(&fakeT{TB: t}, 3*MaxWait); got != 3*MaxWait {
		t.Errorf("PatienceUpTo without a deadline: %v, want 3*MaxWait", got)
	}
	if got := PatienceUpTo(&fakeT{TB: t, deadline: time.Now().Add(soon)}, 3*MaxWait); got <= 0 || got >= soon {
		t.Errorf("PatienceUpTo, deadline in %v: %v, want less", soon, got)
	}
}

func TestWaitFor(t *testing.T) {
	calls := 0
	WaitFor(t, "the third call", func() bool { calls++; return calls == 3 })
	if calls != 3 {
		t.Errorf("cond called %d times, want 3", calls)
	}

	// A condition that never holds fails the test, naming what it waited
	// for (the fake deadline has already passed: no waiting here).
	f := &fakeT{TB: t, deadline: time.Now().Add(-time.Second)}
	msg := f.run(func(tb testing.TB) { WaitFor(tb, "the moon", func() bool { return false }) })
	if !strings.Contains(msg, "waiting for the moon") {
		t.Errorf("failure %q does not say what it waited for", msg)
	}

	f = &fakeT{TB: t, deadline: time.Now().Add(-time.Second)}
	msg = f.run(func(tb testing.TB) {
		WaitNoError(tb, "the socket", func() error { return errors.New("connection refused") })
	})
	if !strings.Contains(msg, "waiting for the socket: connection refused") {
		t.Errorf("failure %q does not give the last error", msg)
	}
}

func TestReceive(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	if got := Receive(t, ch, "seven"); got != 7 {
		t.Errorf("got %d", got)
	}
	done := make(chan struct{})
	close(done)
	Receive(t, done, "a closed channel") // returns at once

	f := &fakeT{TB: t, deadline: time.Now().Add(-time.Second)}
	msg := f.run(func(tb testing.TB) { Receive(tb, make(chan int), "nothing") })
	if !strings.Contains(msg, "waiting for nothing") {
		t.Errorf("failure %q does not say what it waited for", msg)
	}
}
