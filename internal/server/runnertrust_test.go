package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/server"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
	"google.golang.org/protobuf/proto"
)

func heartbeat(rc covev1connect.RunnerServiceClient, caps *covev1.RunnerCapabilities) error {
	_, err := rc.Heartbeat(context.Background(), connect.NewRequest(&covev1.HeartbeatRequest{Capabilities: caps}))
	return err
}

// TestRunnerCapabilitiesBounded (S6): a runner advertising capabilities
// beyond what the server allows is refused, stays inactive, and attracts no
// environment.
func TestRunnerCapabilitiesBounded(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	alice := h.owner(t)
	rogue, _, _ := h.joinRunner(t, alice, "rogue", nil)
	good := func() *covev1.RunnerCapabilities {
		return &covev1.RunnerCapabilities{MaxEnvironments: 8, Cpus: 4, MemoryBytes: 8 << 30, Runtimes: []string{"container"},
			SshAddress: "runner1:7722", ProxyUrl: "https://runner1:7743",
			Classes: []*covev1.EnvironmentClass{{Id: "default", Cpus: 4, MemoryBytes: 4 << 30, Pids: 8192, EgressPolicy: "deny-private"}}}
	}
	edit := func(f func(c *covev1.RunnerCapabilities)) *covev1.RunnerCapabilities {
		c := good()
		f(c)
		return c
	}
	manyClasses := edit(func(c *covev1.RunnerCapabilities) {
		c.Classes = nil
		for i := range 1000 {
			c.Classes = append(c.Classes, &covev1.EnvironmentClass{Id: "c" + strings.Repeat("x", i%50) + string(rune('a'+i%26))})
		}
	})
	cases := map[string]*covev1.RunnerCapabilities{
		"huge maxEnvironments":     edit(func(c *covev1.RunnerCapabilities) { c.MaxEnvironments = 1 << 30 }),
		"negative maxEnvironments": edit(func(c *covev1.RunnerCapabilities) { c.MaxEnvironments = -1 }),
		"class ../../etc":          edit(func(c *covev1.RunnerCapabilities) { c.Classes[0].Id = "../../etc" }),
		"class twice":              edit(func(c *covev1.RunnerCapabilities) { c.Classes = append(c.Classes, c.Classes[0]) }),
		"1000 classes":             manyClasses,
		"negative cpus":            edit(func(c *covev1.RunnerCapabilities) { c.Classes[0].Cpus = -1 }),
		"absurd cpus":              edit(func(c *covev1.RunnerCapabilities) { c.Classes[0].Cpus = 1 << 30 }),
		"absurd memory":            edit(func(c *covev1.RunnerCapabilities) { c.Classes[0].MemoryBytes = 1 << 62 }),
		"absurd pids":              edit(func(c *covev1.RunnerCapabilities) { c.Classes[0].Pids = 1 << 30 }),
		"absurd cpu burst":         edit(func(c *covev1.RunnerCapabilities) { c.Classes[0].CpuBurst = 1 << 30 }),
		"reclaim at 200%":          edit(func(c *covev1.RunnerCapabilities) { c.Classes[0].MemoryHighPercent = 200 }),
		"negative swap":            edit(func(c *covev1.RunnerCapabilities) { c.Classes[0].SwapBytes = -5 }),
		"negative io":              edit(func(c *covev1.RunnerCapabilities) { c.Classes[0].IoWriteBps = -1 }),
		"escape in display name":   edit(func(c *covev1.RunnerCapabilities) { c.Classes[0].DisplayName = "\x1b]0;owned\x07" }),
		"unknown egress policy":    edit(func(c *covev1.RunnerCapabilities) { c.Classes[0].EgressPolicy = "open" }),
		"runtime with a slash":     edit(func(c *covev1.RunnerCapabilities) { c.Runtimes = []string{"../runc"} }),
		"javascript proxy":         edit(func(c *covev1.RunnerCapabilities) { c.ProxyUrl = "javascript:alert(1)" }),
		"proxy with credentials":   edit(func(c *covev1.RunnerCapabilities) { c.ProxyUrl = "https://u:p@runner1:7743" }),
		"proxy with a path":        edit(func(c *covev1.RunnerCapabilities) { c.ProxyUrl = "https://evil.test/phish?x=1" }),
		"ftp proxy":                edit(func(c *covev1.RunnerCapabilities) { c.ProxyUrl = "ftp://runner1" }),
		"ssh address without port": edit(func(c *covev1.RunnerCapabilities) { c.SshAddress = "runner1" }),
	}
	for name, caps := range cases {
		if err := heartbeat(rogue, caps); code(err) != connect.CodeInvalidArgument || !strings.HasPrefix(message(err), "runner capabilities: ") {
			t.Errorf("%s: %v, want a refusal", name, err)
		}
	}
	// Refused heartbeats leave the runner inactive: nothing is scheduled.
	env, err := alice.create("demo", gitSpec("https://example.com/a.git"))
	if err != nil || env.Metadata.RunnerId != "" {
		t.Fatalf("scheduled onto a refused runner: %v %v", env, err)
	}
	rl, err := alice.runners.ListRunners(ctx, connect.NewRequest(&covev1.ListRunnersRequest{}))
	if err != nil || rl.Msg.Runners[0].Phase != covev1.RunnerPhase_RUNNER_PHASE_INACTIVE {
		t.Fatalf("runner after refused heartbeats: %v %v", rl, err)
	}
	// A sane report is accepted; maxEnvironments 0 (no limit of its own)
	// gets the server's bound.
	if err := heartbeat(rogue, edit(func(c *covev1.RunnerCapabilities) { c.MaxEnvironments = 0 })); err != nil {
		t.Fatalf("good capabilities: %v", err)
	}
	rl, err = alice.runners.ListRunners(ctx, connect.NewRequest(&covev1.ListRunnersRequest{}))
	if err != nil || rl.Msg.Runners[0].Capabilities.MaxEnvironments != server.DefaultMaxRunnerEnvironments {
		t.Fatalf("stored maxEnvironments: %v %v", rl, err)
	}
}

// TestJoinRunnerName: runner names are host names.
func TestJoinRunnerName(t *testing.T) {
	h := newHarness(t)
	alice := h.owner(t)
	for _, name := range []string{"", "a b", "\x1b[2J", strings.Repeat("a", 300), "../x"} {
		jt, err := alice.runners.CreateJoinToken(context.Background(), connect.NewRequest(&covev1.CreateJoinTokenRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.client("").runners.JoinRunner(context.Background(), connect.NewRequest(&covev1.JoinRunnerRequest{JoinToken: jt.Msg.JoinToken, Name: name}))
		if code(err) != connect.CodeInvalidArgument {
			t.Errorf("runner name %q: %v", name, err)
		}
	}
}

// TestRunnerTokenRotation (S6): the runner gets a new token; the old one
// works until the new one is used, then stops.
func TestRunnerTokenRotation(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	caps := &covev1.RunnerCapabilities{Classes: []*covev1.EnvironmentClass{{Id: "default"}}}
	old, _, _ := h.joinRunner(t, h.owner(t), "host-a", caps)
	resp, err := old.RotateRunnerToken(ctx, connect.NewRequest(&covev1.RotateRunnerTokenRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := heartbeat(old, caps); err != nil {
		t.Fatalf("old token before the new one is used: %v", err)
	}
	next := covev1connect.NewRunnerServiceClient(http.DefaultClient, h.url, bearer(resp.Msg.RunnerToken))
	if err := heartbeat(next, caps); err != nil {
		t.Fatalf("new token: %v", err)
	}
	if err := heartbeat(old, caps); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("old token after the new one was used: %v", err)
	}
	if err := heartbeat(next, caps); err != nil {
		t.Fatalf("new token again: %v", err)
	}
	// A user token cannot rotate anything.
	if _, err := h.owner(t).runners.RotateRunnerToken(ctx, connect.NewRequest(&covev1.RotateRunnerTokenRequest{})); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("user rotating: %v", err)
	}
}

// TestDeleteRunner (S6): only owners remove runners; the runner's token
// stops working at once; its environments end stopped and unassigned, and
// can be started elsewhere or deleted.
func TestDeleteRunner(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	alice := h.owner(t)
	bob := h.member(t, alice, "bob")
	caps := &covev1.RunnerCapabilities{MaxEnvironments: 4, Classes: []*covev1.EnvironmentClass{{Id: "default"}}}
	doomed, doomedID, _ := h.joinRunner(t, alice, "doomed", caps)
	env, err := bob.create("demo", gitSpec("https://example.com/a.git"))
	if err != nil || env.Metadata.RunnerId != doomedID {
		t.Fatalf("not scheduled: %v %v", env, err)
	}
	if _, err := bob.runners.DeleteRunner(ctx, connect.NewRequest(&covev1.DeleteRunnerRequest{Id: doomedID})); code(err) != connect.CodePermissionDenied {
		t.Fatalf("member removing a runner: %v", err)
	}
	del, err := alice.runners.DeleteRunner(ctx, connect.NewRequest(&covev1.DeleteRunnerRequest{Id: "doomed"}))
	if err != nil || len(del.Msg.ReleasedEnvironmentIds) != 1 || del.Msg.ReleasedEnvironmentIds[0] != env.Id {
		t.Fatalf("remove by name: %v %v", del, err)
	}
	if err := heartbeat(doomed, caps); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("removed runner's token: %v", err)
	}
	if _, err := doomed.ReportStatus(ctx, connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id,
		Status: &covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING}})); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("removed runner reporting: %v", err)
	}
	got, err := bob.envs.GetEnvironment(ctx, connect.NewRequest(&covev1.GetEnvironmentRequest{Id: "demo"}))
	if err != nil {
		t.Fatal(err)
	}
	e := got.Msg.Environment
	if e.Metadata.RunnerId != "" || e.Status.Phase != stopped || e.Spec.DesiredPhase != stopped || !strings.Contains(e.Status.FailureMessage, `runner "doomed" was removed`) {
		t.Fatalf("released environment: %v", e)
	}
	// Started again, it goes to another runner.
	_, otherID, _ := h.joinRunner(t, alice, "other", caps)
	started, err := bob.setPhase("demo", running)
	if err != nil {
		t.Fatal(err)
	}
	if started, err = waitScheduled(t, bob, proto.Clone(started).(*covev1.Environment)); err != nil || started.Metadata.RunnerId != otherID {
		t.Fatalf("restart after removal: %v %v", started, err)
	}
	if _, err := alice.runners.DeleteRunner(ctx, connect.NewRequest(&covev1.DeleteRunnerRequest{Id: doomedID})); code(err) != connect.CodeNotFound {
		t.Fatalf("removing twice: %v", err)
	}
}

// waitScheduled watches env until it has a runner.
func waitScheduled(t *testing.T, u *user, env *covev1.Environment) (*covev1.Environment, error) {
	t.Helper()
	if env.Metadata.RunnerId != "" {
		return env, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ws, err := u.envs.WatchEnvironments(ctx, connect.NewRequest(&covev1.WatchEnvironmentsRequest{Id: env.Id, SinceRevision: env.Revision}))
	if err != nil {
		return nil, err
	}
	for ws.Receive() {
		if e := ws.Msg().Environment; e.Metadata.RunnerId != "" {
			return e, nil
		}
	}
	return nil, ws.Err()
}
