package lifecycle_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/agent"
	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/agent/agenttest"
	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/lifecycle"
	"github.com/covedev/cove/internal/testutil"
	"github.com/covedev/cove/internal/usererr"
)

// agentRunner is what the runner does: Runner over agentclient.Exec with
// the user, environment and directory fixed.
type agentRunner struct {
	c   *agentclient.Client
	dir string
	env []string
}

func (r *agentRunner) Exec(ctx context.Context, cmd lifecycle.Command, out io.Writer) (int, error) {
	return r.c.Exec(ctx, agentclient.ExecRequest{
		Shell: cmd.Shell, Args: cmd.Args, Dir: r.dir, Env: r.env,
		UserEnvProbe: agentproto.ProbeLoginInteractiveShell,
		Stdout:       out, Stderr: out,
	})
}

// startAgent runs a real agent in this process (agenttest), as the test's
// own user, and connects to it.
func startAgent(t *testing.T) *agentclient.Client {
	t.Helper()
	return agenttest.Start(t, agenttest.Options{Config: agent.Config{User: strconv.Itoa(os.Getuid())}}).Dial(t)
}

func TestRunWithAgent(t *testing.T) {
	c := startAgent(t)
	ws := t.TempDir()
	r := &agentRunner{c: c, dir: ws, env: []string{"REMOTE_VAR=remote value"}}
	ctx := testutil.Context(t)

	h := lifecycle.Hooks{
		Initialize: []lifecycle.Command{sh("touch initialized")},
		OnCreate: []lifecycle.Command{
			{Shell: "echo feature > order", Origin: "Feature 'ghcr.io/x/y:1'"},
			{Args: []string{"sh", "-c", "echo oncreate >> order; echo to stderr >&2"}},
		},
		UpdateContent: []lifecycle.Command{sh(`echo "$REMOTE_VAR" >> order`)},
		PostCreate: []lifecycle.Command{{Parallel: map[string]lifecycle.Command{
			"a": sh("while [ ! -e b ]; do sleep 0.05; done; echo a > a"), // waits for b: only passes in parallel
			"b": {Args: []string{"sh", "-c", "echo b > b; echo from b"}},
		}}},
		PostStart: []lifecycle.Command{sh("pwd; echo started >> order")},
	}
	var log bytes.Buffer
	var orderAtReady string
	res, err := lifecycle.Run(ctx, r, h, lifecycle.Create, &log, func() {
		b, _ := os.ReadFile(filepath.Join(ws, "order"))
		orderAtReady = string(b)
	})
	if err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, log.String())
	}
	order, _ := os.ReadFile(filepath.Join(ws, "order"))
	if string(order) != "feature\noncreate\nremote value\nstarted\n" {
		t.Errorf("order file %q", order)
	}
	if !res.Ready || orderAtReady != "feature\noncreate\nremote value\n" {
		t.Errorf("ready %v with order %q; want after updateContentCommand", res.Ready, orderAtReady)
	}
	if _, err := os.Stat(filepath.Join(ws, "a")); err != nil {
		t.Errorf("parallel member a did not finish: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ws, "initialized")); err == nil {
		t.Error("initializeCommand ran")
	}
	for _, want := range []string{"to stderr\n", "[b] from b\n", "Running the postStartCommand from devcontainer.json...\n$ pwd; echo started >> order\n" + ws + "\n", "initializeCommand from devcontainer.json is not run"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}

	// A failing command stops the sequence; the agent stays reachable.
	log.Reset()
	h = lifecycle.Hooks{
		PostStart: []lifecycle.Command{
			{Parallel: map[string]lifecycle.Command{"ok": sh("true"), "bad": {Args: []string{"sh", "-c", "echo failing; exit 7"}}}},
			sh("echo never >> order"),
		},
	}
	res, err = lifecycle.Run(ctx, r, h, lifecycle.Start, &log, nil)
	msg, _ := usererr.Message(err)
	if want := `postStartCommand "bad" failed with exit code 7: sh -c 'echo failing; exit 7'`; msg != want {
		t.Errorf("error %v, want %q\nlog:\n%s", err, want, log.String())
	}
	if res.Failed == nil || res.Failed.Name != "bad" || res.Failed.ExitCode != 7 || !res.Ready {
		t.Errorf("result %+v", res)
	}
	if !strings.Contains(log.String(), "[bad] failing\n") {
		t.Errorf("log:\n%s", log.String())
	}
	order, _ = os.ReadFile(filepath.Join(ws, "order"))
	if strings.Contains(string(order), "never") {
		t.Error("a command after the failure ran")
	}
	res, err = lifecycle.Run(ctx, r, lifecycle.Hooks{PostCreate: []lifecycle.Command{sh("exit 3")}}, lifecycle.Rebuild, &log, nil)
	if msg, _ := usererr.Message(err); msg != "postCreateCommand failed with exit code 3: exit 3" || res.Failed.Stage != lifecycle.StagePostCreate {
		t.Errorf("got %v, %+v", err, res.Failed)
	}
	if code, err := r.Exec(ctx, sh("exit 0"), io.Discard); err != nil || code != 0 {
		t.Errorf("agent unreachable after failures: %d %v", code, err)
	}
}

// sh is a string-form command.
func sh(s string) lifecycle.Command { return lifecycle.Command{Shell: s} }
