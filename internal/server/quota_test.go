package server_test

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

const (
	running = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING
	stopped = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED
)

func (u *user) setPhase(id string, want covev1.EnvironmentPhase) (*covev1.Environment, error) {
	resp, err := u.envs.UpdateEnvironment(context.Background(), connect.NewRequest(&covev1.UpdateEnvironmentRequest{Id: id, DesiredPhase: want}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.Environment, nil
}

// TestFailedAndStoppedFreeRunnerCapacity (F12): the review's reproduction.
// A member fills a runner, then his environments fail or stop; another
// user's new environment is scheduled onto the runner.
func TestFailedAndStoppedFreeRunnerCapacity(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	alice := h.owner(t)
	bob := h.member(t, alice, "bob")
	carol := h.member(t, alice, "carol")
	runner, runnerID, _ := h.joinRunner(t, alice, "host-a", &covev1.RunnerCapabilities{MaxEnvironments: 2,
		Classes: []*covev1.EnvironmentClass{{Id: "default"}}})

	var bobs []*covev1.Environment
	for _, name := range []string{"bad1", "bad2"} {
		env, err := bob.create(name, gitSpec("https://example.com/nope.git"))
		if err != nil || env.Metadata.RunnerId != runnerID {
			t.Fatalf("bob's %s: %v %v", name, env, err)
		}
		bobs = append(bobs, env)
	}
	// The runner is full while they start.
	full, err := carol.create("early", gitSpec("https://example.com/a.git"))
	if err != nil || full.Metadata.RunnerId != "" || !strings.Contains(full.Status.FailureMessage, "is full") {
		t.Fatalf("while full: %v %v", full, err)
	}
	if _, err := carol.envs.DeleteEnvironment(ctx, connect.NewRequest(&covev1.DeleteEnvironmentRequest{Id: full.Id})); err != nil {
		t.Fatal(err)
	}
	// bad1 fails to start: the runner reports STOPPED with a message.
	report := func(env *covev1.Environment, st *covev1.EnvironmentStatus) {
		t.Helper()
		if _, err := runner.ReportStatus(ctx, connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id, Status: st})); err != nil {
			t.Fatal(err)
		}
	}
	report(bobs[0], &covev1.EnvironmentStatus{Phase: stopped, ObservedSpecVersion: bobs[0].Spec.SpecVersion, FailureMessage: "git clone: repository not found"})
	// bad2 is stopped by bob, and the runner acknowledges.
	st, err := bob.setPhase(bobs[1].Id, stopped)
	if err != nil {
		t.Fatal(err)
	}
	report(bobs[1], &covev1.EnvironmentStatus{Phase: stopped, ObservedSpecVersion: st.Spec.SpecVersion})

	env, err := carol.create("mine", gitSpec("https://example.com/a.git"))
	if err != nil {
		t.Fatal(err)
	}
	if env.Metadata.RunnerId != runnerID || env.Status.FailureMessage != "" {
		t.Fatalf("carol's environment not scheduled: runner %q, message %q", env.Metadata.RunnerId, env.Status.FailureMessage)
	}
	// The runner list shows the real load.
	rl, err := alice.runners.ListRunners(ctx, connect.NewRequest(&covev1.ListRunnersRequest{}))
	if err != nil || len(rl.Msg.Runners) != 1 || rl.Msg.Runners[0].Environments != 1 {
		t.Fatalf("runner load: %v %v", rl, err)
	}
}

// TestRunningCapPerUser (F12): a user may have at most N environments
// running or starting; stopped ones don't count, others are not affected.
func TestRunningCapPerUser(t *testing.T) {
	h := newHarnessWith(t, func(c *server.Config) { c.Limits = server.Limits{RunningPerUser: 2} })
	alice := h.owner(t)
	bob := h.member(t, alice, "bob")
	src := gitSpec("https://example.com/a.git")
	for _, n := range []string{"a", "b"} {
		if _, err := bob.create(n, src); err != nil {
			t.Fatal(err)
		}
	}
	_, err := bob.create("c", src)
	if code(err) != connect.CodeResourceExhausted || !contains(message(err), "2 environments running or starting", "(2)", "cove env stop") {
		t.Fatalf("third running environment: %v", err)
	}
	// Created stopped: allowed, it holds nothing.
	d := gitSpec("https://example.com/a.git")
	d.DesiredPhase = stopped
	if _, err := bob.create("d", d); err != nil {
		t.Fatalf("stopped environment: %v", err)
	}
	if _, err := bob.setPhase("d", running); code(err) != connect.CodeResourceExhausted {
		t.Fatalf("starting a third: %v", err)
	}
	if _, err := bob.envs.RebuildEnvironment(context.Background(), connect.NewRequest(&covev1.RebuildEnvironmentRequest{Id: "d"})); code(err) != connect.CodeResourceExhausted {
		t.Fatalf("rebuilding (starts) a third: %v", err)
	}
	// Starting one that already counts is fine (a retry).
	if _, err := bob.setPhase("a", running); err != nil {
		t.Fatalf("restarting a counted environment: %v", err)
	}
	// Another user is not affected.
	for _, n := range []string{"a", "b"} {
		if _, err := alice.create(n, src); err != nil {
			t.Fatalf("alice: %v", err)
		}
	}
	// Stopping one makes room.
	if _, err := bob.setPhase("a", stopped); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.setPhase("d", running); err != nil {
		t.Fatalf("start after stopping one: %v", err)
	}
	if _, err := bob.create("c", src); code(err) != connect.CodeResourceExhausted {
		t.Fatalf("cap no longer enforced: %v", err)
	}
}

// TestEnvironmentCapPerUser: a user may hold at most N environments in any
// phase; deleting one makes room.
func TestEnvironmentCapPerUser(t *testing.T) {
	h := newHarnessWith(t, func(c *server.Config) { c.Limits = server.Limits{EnvironmentsPerUser: 2} })
	bob := h.member(t, h.owner(t), "bob")
	spec := func() *covev1.EnvironmentSpec {
		s := gitSpec("https://example.com/a.git")
		s.DesiredPhase = stopped
		return s
	}
	for _, n := range []string{"a", "b"} {
		if _, err := bob.create(n, spec()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.create("c", spec()); code(err) != connect.CodeResourceExhausted || !contains(message(err), "delete one first") {
		t.Fatalf("third environment: %v", err)
	}
	if _, err := bob.envs.DeleteEnvironment(context.Background(), connect.NewRequest(&covev1.DeleteEnvironmentRequest{Id: "a"})); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.create("c", spec()); err != nil {
		t.Fatalf("after deleting one: %v", err)
	}
}

// TestWatchCapPerUser (R5): concurrent watch streams per user are bounded;
// closing one frees its slot; other users are not affected.
func TestWatchCapPerUser(t *testing.T) {
	h := newHarnessWith(t, func(c *server.Config) { c.Limits = server.Limits{WatchesPerUser: 2} })
	alice := h.owner(t)
	bob := h.member(t, alice, "bob")
	released := make(chan string, 8)
	server.OnStreamReleased(h.srv, func(key string) { released <- key })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch := func(u *user, ctx context.Context) (*connect.ServerStreamForClient[covev1.WatchEnvironmentsResponse], error) {
		s, err := u.envs.WatchEnvironments(ctx, connect.NewRequest(&covev1.WatchEnvironmentsRequest{}))
		if err != nil {
			return nil, err
		}
		// Wait for the server's answer: it sends headers once the stream
		// holds its slot; a refusal ends the stream (seen by Receive).
		s.ResponseHeader()
		return s, nil
	}
	first, cancelFirst := context.WithCancel(ctx)
	if _, err := watch(bob, first); err != nil {
		t.Fatal(err)
	}
	if _, err := watch(bob, ctx); err != nil {
		t.Fatal(err)
	}
	third, err := watch(bob, ctx)
	if err == nil {
		if third.Receive() {
			t.Fatalf("third watch got %v", third.Msg())
		}
		err = third.Err()
	}
	if code(err) != connect.CodeResourceExhausted || !contains(message(err), "watches open") {
		t.Fatalf("third watch: %v", err)
	}
	// Alice has her own budget.
	if _, err := watch(alice, ctx); err != nil {
		t.Fatalf("alice: %v", err)
	}
	// Closing one frees a slot.
	cancelFirst()
	testutil.Receive(t, released, "the closed watch to release its slot")
	again, err := watch(bob, ctx)
	if err != nil {
		t.Fatalf("after closing one: %v", err)
	}
	// It is a working watch: it lists bob's (zero) environments and waits.
	if _, err := bob.create("x", gitSpec("https://example.com/a.git")); err != nil {
		t.Fatal(err)
	}
	if !again.Receive() || again.Msg().Environment.GetMetadata().GetName() != "x" {
		t.Fatalf("watch after a freed slot: %v", again.Err())
	}
}

// TestRunnerWatchCap: a runner (or a stolen runner token) cannot open
// assignment watches without bound.
func TestRunnerWatchCap(t *testing.T) {
	h := newHarness(t)
	runner, _, _ := h.joinRunner(t, h.owner(t), "host-a", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; ; i++ {
		s, err := runner.WatchAssignments(ctx, connect.NewRequest(&covev1.WatchAssignmentsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		s.ResponseHeader()
		if i < server.MaxRunnerWatches {
			continue // within the bound: the stream stays open
		}
		if s.Receive() || code(s.Err()) != connect.CodeResourceExhausted {
			t.Fatalf("watch %d: %v, want resource exhausted", i+1, s.Err())
		}
		return
	}
}
