package agentclient_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/agentclient"
)

func TestExec(t *testing.T) {
	a := newTestAgent(t)
	c := dial(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	run := func(req agentclient.ExecRequest) (string, string, int) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		req.Stdout, req.Stderr = &stdout, &stderr
		code, err := c.Exec(ctx, req)
		if err != nil {
			t.Fatalf("Exec(%+v): %v", req, err)
		}
		return stdout.String(), stderr.String(), code
	}

	out, errOut, code := run(agentclient.ExecRequest{Shell: "echo out; echo err >&2; exit 3"})
	if out != "out\n" || errOut != "err\n" || code != 3 {
		t.Errorf("shell: got %q %q exit %d", out, errOut, code)
	}
	// argv: no shell interpretation.
	out, _, code = run(agentclient.ExecRequest{Args: []string{"printf", "%s|", "a b", "$HOME", "*"}})
	if out != "a b|$HOME|*|" || code != 0 {
		t.Errorf("argv: got %q exit %d", out, code)
	}
	dir := t.TempDir()
	out, _, _ = run(agentclient.ExecRequest{Shell: `echo "$FOO"; pwd; cat`, Env: []string{"FOO=bar baz"}, Dir: dir, Stdin: strings.NewReader("input\n")})
	if out != "bar baz\n"+dir+"\ninput\n" {
		t.Errorf("env, dir, stdin: got %q", out)
	}
	_, _, code = run(agentclient.ExecRequest{Shell: "kill -KILL $$"})
	if code != 128+9 {
		t.Errorf("killed: exit %d, want 137", code)
	}
	_, errOut, code = run(agentclient.ExecRequest{Args: []string{"no-such-program-xyz"}})
	if code != 127 || !strings.Contains(errOut, "not found") {
		t.Errorf("missing program: exit %d stderr %q", code, errOut)
	}
	if _, err := c.Exec(ctx, agentclient.ExecRequest{}); err == nil {
		t.Error("Exec without a command succeeded")
	}

	if os.Geteuid() == 0 {
		// Another user, over a second connection the client keeps.
		for range 2 {
			out, errOut, code = run(agentclient.ExecRequest{User: "65534", Args: []string{"id", "-u"}})
			if out != "65534\n" || code != 0 {
				t.Errorf("as 65534: got %q (%q) exit %d", out, errOut, code)
			}
		}
		out, _, _ = run(agentclient.ExecRequest{Args: []string{"id", "-u"}})
		if out != "0\n" {
			t.Errorf("default user: got %q, want 0", out)
		}
	}

	// Cancelling ctx ends a running command.
	cctx, ccancel := context.WithCancel(ctx)
	time.AfterFunc(200*time.Millisecond, ccancel)
	start := time.Now()
	_, err := c.Exec(cctx, agentclient.ExecRequest{Shell: "sleep 30"})
	if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Errorf("cancelled exec: %v after %v", err, time.Since(start))
	}
}

// TestExecOneWriterForBoth: one buffer for stdout and stderr (as health
// checks and logs pass) loses nothing, however the two copies interleave.
func TestExecOneWriterForBoth(t *testing.T) {
	a := newTestAgent(t)
	c := dial(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 200 {
		var buf bytes.Buffer
		code, err := c.Exec(ctx, agentclient.ExecRequest{Shell: "echo out; echo err >&2; exit 1", Stdout: &buf, Stderr: &buf})
		if got := buf.String(); err != nil || code != 1 || (got != "out\nerr\n" && got != "err\nout\n") {
			t.Fatalf("run %d: exit %d, %v, output %q", i, code, err, got)
		}
	}
}
