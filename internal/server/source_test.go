package server_test

import (
	"context"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

// TestLocalSourceSpellings (F15): a member naming a local source in any
// spelling is refused, always with the same message, and nothing is
// stored; the owner may, and gets a clear message for a malformed one.
func TestLocalSourceSpellings(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	_, ownerTok, err := h.srv.Bootstrap(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	owner := covev1connect.NewEnvironmentServiceClient(http.DefaultClient, h.url, bearer(ownerTok))
	users := covev1connect.NewUserServiceClient(http.DefaultClient, h.url, bearer(ownerTok))
	bobResp, err := users.CreateUser(ctx, connect.NewRequest(&covev1.CreateUserRequest{Name: "bob"}))
	if err != nil {
		t.Fatal(err)
	}
	bob := covev1connect.NewEnvironmentServiceClient(http.DefaultClient, h.url, bearer(bobResp.Msg.Token))
	create := func(c covev1connect.EnvironmentServiceClient, name, src string) error {
		_, err := c.CreateEnvironment(ctx, connect.NewRequest(&covev1.CreateEnvironmentRequest{Name: name,
			Spec: &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: src}}}))
		return err
	}
	var want string
	for _, src := range []string{"file:///x", "FILE:///etc", "File:///x", " /etc", "/etc", "fIlE://localhost/root/.ssh", "/etc\t"} {
		err := create(bob, "sneaky", src)
		var ce *connect.Error
		if code(err) != connect.CodePermissionDenied || !asConnect(err, &ce) {
			t.Fatalf("member with %q: %v, want permission denied", src, err)
		}
		if want == "" {
			want = ce.Message()
		}
		if ce.Message() != want {
			t.Errorf("member with %q: message %q differs from %q", src, ce.Message(), want)
		}
	}
	list, err := bob.ListEnvironments(ctx, connect.NewRequest(&covev1.ListEnvironmentsRequest{IncludeDeleted: true}))
	if err != nil || len(list.Msg.Environments) != 0 {
		t.Fatalf("refused creations stored something: %v %v", list, err)
	}
	// Remote URLs in any case are fine for members.
	if err := create(bob, "remote", "HTTPS://example.com/a.git"); err != nil {
		t.Fatalf("member with an https URL: %v", err)
	}
	// Owners may use local sources; a malformed one is refused with the
	// classification's reason, naming the field.
	if err := create(owner, "local", "FILE:///srv/repo"); err != nil {
		t.Fatalf("owner with a local source: %v", err)
	}
	err = create(owner, "spaced", " /etc")
	var ce *connect.Error
	if code(err) != connect.CodeInvalidArgument || !asConnect(err, &ce) || !contains(ce.Message(), "spec.content.gitUrl", "invalid git URL") {
		t.Fatalf("owner with a leading space: %v", err)
	}
}
