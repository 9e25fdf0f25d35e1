package runner

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
)

// TestTransientFailuresRetry: an image step that fails because the
// registry is unreachable is retried — the status says so and when — and
// the environment comes up once the registry answers, with nobody typing
// `cove env start`; a registry that says the image does not exist stops it
// with the message until the spec changes.
func TestTransientFailuresRetry(t *testing.T) {
	c := newCrashWorld(t)
	env := c.env()
	env.Spec.DesiredPhase, env.Spec.SpecVersion = phaseRunning, 1
	r := c.runner(0, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := testWorker(ctx, cancel, r, env)
	w.retryIn = 8 * time.Second

	c.images.pullErr = usererr.Wrap(errdefs.Unavailable(errors.New("connection refused")), "registry registry.invalid unreachable: connection refused")
	if _, err := r.reconcile(ctx, w, env); err == nil {
		t.Fatal("reconcile succeeded with the registry down")
	}
	st, err := loadState(r.layout(env.Id).State())
	if err != nil {
		t.Fatal(err)
	}
	if st.Failure.SpecVersion != 0 {
		t.Fatalf("a transient failure stopped the environment: %+v", st.Failure)
	}
	last := c.srv.last[env.Id]
	if msg := last.GetMachine().GetMessage(); !strings.Contains(msg, "unreachable") || !strings.Contains(msg, "retrying in 8s") {
		t.Errorf("machine sub-status %q, want the reason and the retry", msg)
	}
	if last.GetPhase() == phaseStopped {
		t.Errorf("phase %s during a retry", last.GetPhase())
	}
	c.images.pullErr = nil // the registry is back
	if err := c.reconcileUntil(r, env); err != nil {
		t.Fatal(err)
	}
	c.check(env)

	// Terminal: the image does not exist.
	c2 := newCrashWorld(t)
	env2 := c2.env()
	env2.Spec.DesiredPhase, env2.Spec.SpecVersion = phaseRunning, 1
	c2.images.pullErr = usererr.Wrap(errdefs.NotFound(errors.New("MANIFEST_UNKNOWN")), "image registry.invalid/dev:1 not found")
	r2 := c2.runner(0, false)
	w2 := testWorker(ctx, cancel, r2, env2)
	for pass := 0; pass < 2; pass++ { // the failure, then the pass that reports it
		if _, err := r2.reconcile(ctx, w2, env2); err != nil {
			t.Fatalf("pass %d: %v", pass, err)
		}
	}
	if got := c2.srv.last[env2.Id]; got.GetPhase() != phaseStopped || !strings.Contains(got.GetFailureMessage(), "not found") {
		t.Errorf("status %v %q, want STOPPED with the message", got.GetPhase(), got.GetFailureMessage())
	}
}

// TestRetriesEnd: a failure that may heal but does not is retried
// maxStartRetries times, then recorded (the environment stops with the
// reason), so that nothing — a registry that stays down, a build whose
// error merely looks transient — is retried forever; a new start tries
// again.
func TestRetriesEnd(t *testing.T) {
	c := newCrashWorld(t)
	env := c.env()
	env.Spec.DesiredPhase, env.Spec.SpecVersion = phaseRunning, 1
	r := c.runner(0, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := testWorker(ctx, cancel, r, env)
	c.images.pullErr = usererr.Wrap(errdefs.Unavailable(errors.New("503")), "registry registry.invalid: 503 Service Unavailable")
	for i := 1; i <= maxStartRetries; i++ {
		if _, err := r.reconcile(ctx, w, env); err == nil {
			t.Fatalf("attempt %d: no error", i)
		}
	}
	if _, err := r.reconcile(ctx, w, env); err != nil {
		t.Fatalf("the last attempt: %v, want the failure recorded", err)
	}
	st, err := loadState(r.layout(env.Id).State())
	if err != nil {
		t.Fatal(err)
	}
	if st.Failure.SpecVersion != 1 || !strings.Contains(st.Failure.Message, "503") || !strings.Contains(st.Failure.Message, "gave up after") {
		t.Fatalf("failure %+v", st.Failure)
	}
	// `cove env start` (a new spec version) tries again, and the
	// registry is back.
	c.images.pullErr = nil
	env.Spec.SpecVersion++
	if err := c.reconcileUntil(r, env); err != nil {
		t.Fatal(err)
	}
	c.check(env)
}

// TestStatusEchoDoesNotWake: the status a runner reports comes back to it
// through its assignment watch; only a changed spec wakes the worker, so a
// failed pass waits for its backoff instead of being retried at once (in a
// loop as fast as the server answers).
func TestStatusEchoDoesNotWake(t *testing.T) {
	w := &worker{kick: make(chan struct{}, 1)}
	env := &covev1.Environment{Id: "e1", Spec: &covev1.EnvironmentSpec{SpecVersion: 3, DesiredPhase: phaseRunning}}
	w.update(env)
	if len(w.kick) != 1 {
		t.Fatal("a new environment did not wake the worker")
	}
	<-w.kick
	echo := proto.Clone(env).(*covev1.Environment)
	echo.Status = &covev1.EnvironmentStatus{Phase: phaseCreating, Machine: &covev1.SubStatus{Message: "registry unreachable, retrying in 8s"}}
	echo.Revision = 9
	w.update(echo)
	if len(w.kick) != 0 {
		t.Fatal("the runner's own status report woke the worker")
	}
	started := proto.Clone(echo).(*covev1.Environment)
	started.Spec.SpecVersion = 4
	w.update(started)
	if len(w.kick) != 1 {
		t.Fatal("a new spec did not wake the worker")
	}
}
