package testutil

import (
	"context"
	"testing"
	"time"
)

// MaxWait bounds how long the waits below wait for something that should
// happen: far longer than anything takes on a machine whose cores are busy
// with other tests (starting a container there can take seconds), yet short
// enough that a hang fails the one test with a message instead of `go test
// -timeout` killing the whole test binary with a goroutine dump.
const MaxWait = 2 * time.Minute

// Patience returns how long t may still wait for something: MaxWait, or less
// when the test binary's deadline (go test -timeout) comes sooner, keeping a
// margin for the test to report the failure and clean up.
func Patience(t testing.TB) time.Duration {
	return PatienceUpTo(t, MaxWait)
}

// PatienceUpTo is Patience for what may take longer than MaxWait on a busy
// machine (an environment that clones, pulls and installs features before
// it runs): up to longest, or less when the test binary's deadline comes
// sooner.
func PatienceUpTo(t testing.TB, longest time.Duration) time.Duration {
	wait := longest
	if td, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := td.Deadline(); ok {
			left := time.Until(deadline)
			if left -= min(left/10, 30*time.Second); left < wait {
				wait = left
			}
		}
	}
	return max(wait, 0)
}

// Context returns a context that is done after Patience(t) or when the test
// returns, whichever comes first. It is already done when t's cleanup
// functions run: a cleanup that needs a context makes its own.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), Patience(t))
	t.Cleanup(cancel)
	return ctx
}

// WaitFor calls cond until it returns true and fails the test, naming what
// it waited for, when that does not happen within Patience(t). It polls
// often at first, then every 100 ms. Call it from the test's goroutine.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	WaitNoError(t, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// WaitNoError calls f until it returns nil and fails the test with f's last
// error when that does not happen within Patience(t). Call it from the
// test's goroutine.
func WaitNoError(t testing.TB, what string, f func() error) {
	t.Helper()
	patience := Patience(t)
	deadline := time.Now().Add(patience)
	interval := time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			if err == errNotYet {
				t.Fatalf("gave up after %v waiting for %s", patience, what)
			}
			t.Fatalf("gave up after %v waiting for %s: %v", patience, what, err)
		}
		time.Sleep(interval)
		interval = min(2*interval, 100*time.Millisecond)
	}
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet error = notYet{}

// Receive returns the next value from ch (the zero value once ch is
// closed), and fails the test, naming what it waited for, when none comes
// within Patience(t). Call it from the test's goroutine.
func Receive[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	patience := Patience(t)
	timer := time.NewTimer(patience)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("gave up after %v waiting for %s", patience, what)
	}
	panic("unreachable")
}
