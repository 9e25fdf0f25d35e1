package lifecycle_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/agent"
	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/lifecycle"
	"github.com/covedev/cove/internal/usererr"
	"golang.org/x/crypto/ssh"
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

// startAgent runs a real agent in this process on a temp socket, as the
// test's own user, and connects to it.
func startAgent(t *testing.T) *agentclient.Client {
	t.Helper()
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	sock, keys, hostKey := filepath.Join(dir, "agent.sock"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "host_key")
	if err := os.WriteFile(keys, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	// The test's one key is the agent's host key too.
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hostKey, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, agent.Config{SocketPath: sock, AuthorizedKeysPath: keys, HostKeyPath: hostKey, User: strconv.Itoa(os.Getuid())})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("agent did not stop")
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("agent socket never appeared")
		}
		time.Sleep(20 * time.Millisecond)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	c, err := agentclient.Dial(dctx, agentclient.Endpoint{Socket: sock, Signer: signer, HostKey: signer.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRunWithAgent(t *testing.T) {
	c := startAgent(t)
	ws := t.TempDir()
	r := &agentRunner{c: c, dir: ws, env: []string{"REMOTE_VAR=remote value"}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

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
