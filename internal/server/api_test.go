package server_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"crypto/ed25519"
	"crypto/rand"
	"github.com/covedev/cove/internal/apiclient"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/server/servertest"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
	"golang.org/x/crypto/ssh"
)

type harness struct {
	srv *server.Server
	url string
}

func newHarness(t *testing.T) *harness { return newHarnessWith(t, nil) }

// newHarnessWith starts a server (servertest) whose config configure may
// change; the tests bootstrap their owner themselves.
func newHarnessWith(t *testing.T, configure func(*server.Config)) *harness {
	t.Helper()
	s := servertest.Start(t, servertest.Options{Configure: configure, NoAdmin: true})
	return &harness{srv: s.Server, url: s.URL}
}

func bearer(tok string) connect.ClientOption {
	return connect.WithInterceptors(apiclient.Bearer(tok))
}

func code(err error) connect.Code { return connect.CodeOf(err) }

func TestAPIOwnershipRunnersAndWatch(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	_, aliceTok, err := h.srv.Bootstrap(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	alice := covev1connect.NewEnvironmentServiceClient(http.DefaultClient, h.url, bearer(aliceTok))
	aliceUsers := covev1connect.NewUserServiceClient(http.DefaultClient, h.url, bearer(aliceTok))
	bobResp, err := aliceUsers.CreateUser(ctx, connect.NewRequest(&covev1.CreateUserRequest{Name: "bob"}))
	if err != nil {
		t.Fatal(err)
	}
	bob := covev1connect.NewEnvironmentServiceClient(http.DefaultClient, h.url, bearer(bobResp.Msg.Token))
	anon := covev1connect.NewEnvironmentServiceClient(http.DefaultClient, h.url)
	bad := covev1connect.NewEnvironmentServiceClient(http.DefaultClient, h.url, bearer("cove_pat_nope"))

	// Every call is authenticated.
	if _, err := anon.ListEnvironments(ctx, connect.NewRequest(&covev1.ListEnvironmentsRequest{})); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("anonymous list: %v", err)
	}
	if _, err := bad.ListEnvironments(ctx, connect.NewRequest(&covev1.ListEnvironmentsRequest{})); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("bad token list: %v", err)
	}

	// No runner yet: the environment says why it is waiting.
	spec := &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: "/src/repo"}}
	cr, err := alice.CreateEnvironment(ctx, connect.NewRequest(&covev1.CreateEnvironmentRequest{Name: "demo", Spec: spec}))
	if err != nil {
		t.Fatal(err)
	}
	env := cr.Msg.Environment
	if !strings.Contains(env.Status.FailureMessage, "no runner") || env.Metadata.RunnerId != "" {
		t.Fatalf("unscheduled env: %v", env.Status)
	}
	if _, err := alice.CreateEnvironment(ctx, connect.NewRequest(&covev1.CreateEnvironmentRequest{Name: "demo", Spec: spec})); code(err) != connect.CodeAlreadyExists {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := alice.CreateEnvironment(ctx, connect.NewRequest(&covev1.CreateEnvironmentRequest{Name: "Bad_Name", Spec: spec})); code(err) != connect.CodeInvalidArgument {
		t.Fatalf("bad name: %v", err)
	}

	// Bob sees and touches nothing of Alice's.
	for _, id := range []string{env.Id, "demo"} {
		if _, err := bob.GetEnvironment(ctx, connect.NewRequest(&covev1.GetEnvironmentRequest{Id: id})); code(err) != connect.CodeNotFound {
			t.Fatalf("bob get %s: %v", id, err)
		}
		if _, err := bob.DeleteEnvironment(ctx, connect.NewRequest(&covev1.DeleteEnvironmentRequest{Id: id})); code(err) != connect.CodeNotFound {
			t.Fatalf("bob delete %s: %v", id, err)
		}
	}
	_, pub := newKey(t)
	if _, err := bob.SignSSHCertificate(ctx, connect.NewRequest(&covev1.SignSSHCertificateRequest{EnvironmentId: env.Id, PublicKey: pub})); code(err) != connect.CodeNotFound {
		t.Fatalf("bob sign: %v", err)
	}
	bl, err := bob.ListEnvironments(ctx, connect.NewRequest(&covev1.ListEnvironmentsRequest{}))
	if err != nil || len(bl.Msg.Environments) != 0 {
		t.Fatalf("bob list: %v %v", bl, err)
	}

	// Only owners make join tokens; a join token works once.
	bobRunners := covev1connect.NewRunnerServiceClient(http.DefaultClient, h.url, bearer(bobResp.Msg.Token))
	if _, err := bobRunners.CreateJoinToken(ctx, connect.NewRequest(&covev1.CreateJoinTokenRequest{})); code(err) != connect.CodePermissionDenied {
		t.Fatalf("member join token: %v", err)
	}
	aliceRunners := covev1connect.NewRunnerServiceClient(http.DefaultClient, h.url, bearer(aliceTok))
	jt, err := aliceRunners.CreateJoinToken(ctx, connect.NewRequest(&covev1.CreateJoinTokenRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	anonRunners := covev1connect.NewRunnerServiceClient(http.DefaultClient, h.url)
	join, err := anonRunners.JoinRunner(ctx, connect.NewRequest(&covev1.JoinRunnerRequest{JoinToken: jt.Msg.JoinToken, Name: "host-a"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anonRunners.JoinRunner(ctx, connect.NewRequest(&covev1.JoinRunnerRequest{JoinToken: jt.Msg.JoinToken, Name: "host-b"})); code(err) != connect.CodePermissionDenied {
		t.Fatalf("second join with one token: %v", err)
	}
	runner := covev1connect.NewRunnerServiceClient(http.DefaultClient, h.url, bearer(join.Msg.RunnerToken))
	// A user token is not a runner token.
	if _, err := bobRunners.Heartbeat(ctx, connect.NewRequest(&covev1.HeartbeatRequest{})); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("user heartbeat: %v", err)
	}

	// Watch from the current revision, then let the runner come up.
	wctx, cancel := context.WithTimeout(ctx, testutil.Patience(t))
	defer cancel()
	assignments, err := runner.WatchAssignments(wctx, connect.NewRequest(&covev1.WatchAssignmentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	hostPub, _ := newKey(t)
	hb, err := runner.Heartbeat(ctx, connect.NewRequest(&covev1.HeartbeatRequest{
		HostPublicKey: hostPub,
		Capabilities: &covev1.RunnerCapabilities{MaxEnvironments: 4, SshAddress: "127.0.0.1:2222",
			Classes: []*covev1.EnvironmentClass{{Id: "default"}}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	hostCert, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hb.Msg.HostCertificate))
	if err != nil || hostCert.(*ssh.Certificate).CertType != ssh.HostCert {
		t.Fatalf("host certificate: %v %v", hostCert, err)
	}
	// The controller schedules the waiting environment onto the runner.
	var assigned *covev1.Environment
	for assigned == nil && assignments.Receive() {
		if e := assignments.Msg().Environment; e.Id == env.Id && e.Metadata.RunnerId == join.Msg.RunnerId {
			assigned = e
		}
	}
	if assigned == nil {
		t.Fatalf("never assigned: %v", assignments.Err())
	}

	// The runner reports status; another runner may not.
	jt2, _ := aliceRunners.CreateJoinToken(ctx, connect.NewRequest(&covev1.CreateJoinTokenRequest{}))
	join2, err := anonRunners.JoinRunner(ctx, connect.NewRequest(&covev1.JoinRunnerRequest{JoinToken: jt2.Msg.JoinToken, Name: "host-b"}))
	if err != nil {
		t.Fatal(err)
	}
	other := covev1connect.NewRunnerServiceClient(http.DefaultClient, h.url, bearer(join2.Msg.RunnerToken))
	running := &covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, ObservedSpecVersion: 1,
		Ssh: &covev1.SSHAddress{Address: "127.0.0.1:2222", Host: "demo.cove"}}
	if _, err := other.ReportStatus(ctx, connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id, Status: running})); code(err) != connect.CodePermissionDenied {
		t.Fatalf("foreign runner report: %v", err)
	}
	rep, err := runner.ReportStatus(ctx, connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id, Status: running}))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Msg.Environment.Status.StatusVersion <= env.Status.StatusVersion || rep.Msg.Environment.Metadata.StartedAt == nil {
		t.Fatalf("status version not bumped or startedAt missing: %v", rep.Msg.Environment)
	}

	// A watcher resuming from an old revision sees the latest state.
	ws, err := alice.WatchEnvironments(wctx, connect.NewRequest(&covev1.WatchEnvironmentsRequest{Id: "demo", SinceRevision: env.Revision}))
	if err != nil {
		t.Fatal(err)
	}
	for ws.Receive() {
		if ws.Msg().Environment.Status.Phase == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING {
			break
		}
	}
	if ws.Err() != nil {
		t.Fatal(ws.Err())
	}

	// SSH certificates are for the owner and one environment.
	sc, err := alice.SignSSHCertificate(ctx, connect.NewRequest(&covev1.SignSSHCertificateRequest{EnvironmentId: "demo", PublicKey: pub}))
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(sc.Msg.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	cert := k.(*ssh.Certificate)
	if len(cert.ValidPrincipals) != 1 || cert.ValidPrincipals[0] != env.Id || sc.Msg.Ssh.GetAddress() != "127.0.0.1:2222" {
		t.Fatalf("cert principals %v, ssh %v", cert.ValidPrincipals, sc.Msg.Ssh)
	}

	// Stop bumps the spec version; delete is acknowledged by the runner.
	up, err := alice.UpdateEnvironment(ctx, connect.NewRequest(&covev1.UpdateEnvironmentRequest{Id: "demo", DesiredPhase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED}))
	if err != nil || up.Msg.Environment.Spec.SpecVersion != 2 {
		t.Fatalf("stop: %v %v", up, err)
	}
	if _, err := alice.DeleteEnvironment(ctx, connect.NewRequest(&covev1.DeleteEnvironmentRequest{Id: "demo"})); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.UpdateEnvironment(ctx, connect.NewRequest(&covev1.UpdateEnvironmentRequest{Id: "demo", DesiredPhase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING})); code(err) != connect.CodeFailedPrecondition {
		t.Fatalf("start while deleting: %v", err)
	}
	if _, err := runner.ReportStatus(ctx, connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id,
		Status: &covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED, ObservedSpecVersion: 3}})); err != nil {
		t.Fatal(err)
	}
	// The name is free again.
	if _, err := alice.CreateEnvironment(ctx, connect.NewRequest(&covev1.CreateEnvironmentRequest{Name: "demo", Spec: spec})); err != nil {
		t.Fatalf("reuse name: %v", err)
	}
	var ce *connect.Error
	_, err = alice.GetEnvironment(ctx, connect.NewRequest(&covev1.GetEnvironmentRequest{Id: "nope"}))
	if !errors.As(err, &ce) || !strings.Contains(ce.Message(), `"nope" not found`) {
		t.Fatalf("not found message: %v", err)
	}
}

func newKey(t *testing.T) (string, string) {
	t.Helper()
	p1, _, _ := ed25519.GenerateKey(rand.Reader)
	p2, _, _ := ed25519.GenerateKey(rand.Reader)
	k1, _ := ssh.NewPublicKey(p1)
	k2, _ := ssh.NewPublicKey(p2)
	return string(ssh.MarshalAuthorizedKey(k1)), string(ssh.MarshalAuthorizedKey(k2))
}

func asConnect(err error, ce **connect.Error) bool { return errors.As(err, ce) }

// contains reports whether s contains every one of subs.
func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
