package cli

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	"github.com/covedev/cove/internal/server/servertest"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
)

// cliServer runs an API server in-process (servertest) and logs the CLI in
// to it as its owner, alice.
func cliServer(t *testing.T) *servertest.Server {
	t.Helper()
	s := servertest.Start(t, servertest.Options{AdminName: "alice"})
	t.Setenv("COVE_CONFIG_DIR", t.TempDir())
	t.Setenv("COVE_SERVER", s.URL)
	t.Setenv("COVE_TOKEN", s.Admin.Token)
	return s
}

func runCmd(t *testing.T, cmd *cobra.Command, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	cmd.SilenceUsage = true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// TestTokenCommands: create, list and revoke through the CLI; a revoked
// token stops working for the CLI at once.
func TestTokenCommands(t *testing.T) {
	cliServer(t)
	tok, errOut, err := runCmd(t, TokenCommand(), "create", "--name", "ci", "--ttl", "1h")
	if err != nil || !strings.HasPrefix(tok, "cove_pat_") || !strings.Contains(errOut, "expires ") {
		t.Fatalf("create: %q %q %v", tok, errOut, err)
	}
	if _, _, err := runCmd(t, TokenCommand(), "create", "--ttl", "-5s"); err == nil {
		t.Fatal("negative --ttl accepted")
	}
	list, _, err := runCmd(t, TokenCommand(), "list")
	if err != nil || !strings.Contains(list, "(this one)") || !strings.Contains(list, "ci") || strings.Contains(list, "cove_pat_") {
		t.Fatalf("list:\n%s %v", list, err)
	}
	var id string
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == "ci" {
			id = f[0]
		}
	}
	if id == "" {
		t.Fatalf("no ci token in:\n%s", list)
	}
	// Log the CLI in with the new token, then revoke it with itself.
	t.Setenv("COVE_TOKEN", strings.TrimSpace(tok))
	if out, _, err := runCmd(t, TokenCommand(), "revoke", id); err != nil || strings.TrimSpace(out) != id {
		t.Fatalf("revoke: %q %v", out, err)
	}
	if _, _, err := runCmd(t, TokenCommand(), "list"); err == nil || !strings.Contains(err.Error(), "invalid or expired token") {
		t.Fatalf("revoked token still works: %v", err)
	}
}

// TestRunnerRemoveCommand: an owner removes a runner by name; its token
// stops working.
func TestRunnerRemoveCommand(t *testing.T) {
	srv := cliServer(t)
	ctx := context.Background()
	jt := srv.JoinToken(t)
	c, _, err := clients()
	if err != nil {
		t.Fatal(err)
	}
	join, err := c.Runners.JoinRunner(ctx, connect.NewRequest(&covev1.JoinRunnerRequest{JoinToken: jt, Name: "old-host"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, errOut, err := runCmd(t, RunnerCommand(), "remove", "old-host"); err != nil || !strings.Contains(errOut, "removed") {
		t.Fatalf("remove: %q %v", errOut, err)
	}
	rc := apiclient.New(http.DefaultClient, os.Getenv("COVE_SERVER"), join.Msg.RunnerToken)
	if _, err := rc.Runners.Heartbeat(ctx, connect.NewRequest(&covev1.HeartbeatRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("removed runner's token: %v", err)
	}
	if _, _, err := runCmd(t, RunnerCommand(), "remove", "old-host"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("removing twice: %v", err)
	}
}
