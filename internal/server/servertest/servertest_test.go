package servertest

import (
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

func TestServer(t *testing.T) {
	configured := false
	s := Start(t, Options{Configure: func(*server.Config) { configured = true }})
	if !configured {
		t.Error("Configure was not called")
	}
	ctx := testutil.Context(t)
	who := func(c *User) (*covev1.WhoAmIResponse, error) {
		resp, err := c.Users.WhoAmI(ctx, connect.NewRequest(&covev1.WhoAmIRequest{}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	if got, err := who(s.Admin); err != nil || got.GetUser().GetName() != "admin" || got.GetUser().GetId() != s.Admin.ID {
		t.Fatalf("admin: %v %v", got, err)
	}
	bob := s.CreateUser(t, "bob")
	if got, err := who(bob); err != nil || got.GetUser().GetName() != "bob" || got.GetUser().GetId() != bob.ID {
		t.Fatalf("bob: %v %v", got, err)
	}
	tok := s.CreateToken(t, bob, "ci", time.Hour)
	if got, err := who(&User{Clients: s.Client(tok)}); err != nil || got.GetUser().GetId() != bob.ID {
		t.Fatalf("bob's second token: %v %v", got, err)
	}
	if _, err := who(&User{Clients: s.Client("")}); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("anonymous: %v, want unauthenticated", err)
	}
	// A member cannot make join tokens; the admin's join a runner.
	if _, err := bob.Runners.CreateJoinToken(ctx, connect.NewRequest(&covev1.CreateJoinTokenRequest{})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("member's join token: %v, want permission denied", err)
	}
	r := s.JoinRunner(t, "host-a")
	if _, err := r.Client.Heartbeat(ctx, connect.NewRequest(&covev1.HeartbeatRequest{})); err != nil {
		t.Fatalf("runner heartbeat: %v", err)
	}
	runners, err := s.Admin.Runners.ListRunners(ctx, connect.NewRequest(&covev1.ListRunnersRequest{}))
	if err != nil || len(runners.Msg.GetRunners()) != 1 || runners.Msg.GetRunners()[0].GetId() != r.ID {
		t.Fatalf("runners: %v %v", runners, err)
	}
}

func TestNoAdmin(t *testing.T) {
	s := Start(t, Options{NoAdmin: true})
	if s.Admin != nil {
		t.Fatal("an admin was bootstrapped")
	}
	if _, err := s.Client("").Users.WhoAmI(testutil.Context(t), connect.NewRequest(&covev1.WhoAmIRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("anonymous: %v, want unauthenticated", err)
	}
}
