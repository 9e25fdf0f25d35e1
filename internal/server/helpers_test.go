package server_test

import (
	"context"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

// user is one logged-in user's clients.
type user struct {
	tok     string
	envs    covev1connect.EnvironmentServiceClient
	users   covev1connect.UserServiceClient
	runners covev1connect.RunnerServiceClient
}

// client makes clients sending tok ("": anonymous).
func (h *harness) client(tok string) *user { return h.clientAt(h.url, tok) }

// clientAt makes clients of the server at base.
func (h *harness) clientAt(base, tok string) *user {
	var opts []connect.ClientOption
	if tok != "" {
		opts = append(opts, bearer(tok))
	}
	return &user{tok: tok,
		envs:    covev1connect.NewEnvironmentServiceClient(http.DefaultClient, base, opts...),
		users:   covev1connect.NewUserServiceClient(http.DefaultClient, base, opts...),
		runners: covev1connect.NewRunnerServiceClient(http.DefaultClient, base, opts...)}
}

// owner bootstraps the organization's first owner, "alice".
func (h *harness) owner(t *testing.T) *user {
	t.Helper()
	_, tok, err := h.srv.Bootstrap(context.Background(), "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	return h.client(tok)
}

// member has owner add a member called name.
func (h *harness) member(t *testing.T, owner *user, name string) *user {
	t.Helper()
	resp, err := owner.users.CreateUser(context.Background(), connect.NewRequest(&covev1.CreateUserRequest{Name: name}))
	if err != nil {
		t.Fatal(err)
	}
	return h.client(resp.Msg.Token)
}

// joinRunner joins a runner with a join token from owner and sends its
// first heartbeat with caps; it returns the runner's client and id.
func (h *harness) joinRunner(t *testing.T, owner *user, name string, caps *covev1.RunnerCapabilities) (covev1connect.RunnerServiceClient, string, string) {
	t.Helper()
	ctx := context.Background()
	jt, err := owner.runners.CreateJoinToken(ctx, connect.NewRequest(&covev1.CreateJoinTokenRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	anon := covev1connect.NewRunnerServiceClient(http.DefaultClient, h.url)
	join, err := anon.JoinRunner(ctx, connect.NewRequest(&covev1.JoinRunnerRequest{JoinToken: jt.Msg.JoinToken, Name: name}))
	if err != nil {
		t.Fatal(err)
	}
	rc := covev1connect.NewRunnerServiceClient(http.DefaultClient, h.url, bearer(join.Msg.RunnerToken))
	if caps != nil {
		if _, err := rc.Heartbeat(ctx, connect.NewRequest(&covev1.HeartbeatRequest{Capabilities: caps})); err != nil {
			t.Fatal(err)
		}
	}
	return rc, join.Msg.RunnerId, join.Msg.RunnerToken
}

func gitSpec(url string) *covev1.EnvironmentSpec {
	return &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: url}}
}

func (u *user) create(name string, spec *covev1.EnvironmentSpec) (*covev1.Environment, error) {
	resp, err := u.envs.CreateEnvironment(context.Background(), connect.NewRequest(&covev1.CreateEnvironmentRequest{Name: name, Spec: spec}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.Environment, nil
}

// message is a connect error's message ("" for other errors).
func message(err error) string {
	var ce *connect.Error
	if asConnect(err, &ce) {
		return ce.Message()
	}
	return ""
}
