package agentclient_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/testutil"
)

func TestExec(t *testing.T) {
	a := newTestAgent(t)
	c := dial(t, a)
	ctx := testutil.Context(t)

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

	// Cancelling ctx ends a running command: cancelled once the command
	// said it runs, Exec returns, and the command is gone.
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	pidOut := &cancelOnWrite{cancel: ccancel}
	execErr := make(chan error, 1)
	go func() {
		_, err := c.Exec(cctx, agentclient.ExecRequest{Shell: "echo $$; exec sleep 1000", Stdout: pidOut})
		execErr <- err
	}()
	if err := testutil.Receive(t, execErr, "Exec to return after its context was cancelled"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled exec: %v, want context.Canceled", err)
	}
	pid := strings.TrimSpace(pidOut.String())
	if pid == "" {
		t.Fatal("the command printed no pid")
	}
	testutil.WaitFor(t, "the cancelled command (pid "+pid+") to end", func() bool {
		_, err := os.Stat("/proc/" + pid)
		return err != nil
	})
}

// cancelOnWrite keeps what is written to it and calls cancel after the
// first write.
type cancelOnWrite struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	cancel context.CancelFunc
}

func (w *cancelOnWrite) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	w.cancel()
	return len(p), nil
}

func (w *cancelOnWrite) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestExecOneWriterForBoth: one buffer for stdout and stderr (as health
// checks and logs pass) loses nothing, however the two copies interleave.
func TestExecOneWriterForBoth(t *testing.T) {
	a := newTestAgent(t)
	c := dial(t, a)
	ctx := testutil.Context(t)
	for i := range 200 {
		var buf bytes.Buffer
		code, err := c.Exec(ctx, agentclient.ExecRequest{Shell: "echo out; echo err >&2; exit 1", Stdout: &buf, Stderr: &buf})
		if got := buf.String(); err != nil || code != 1 || (got != "out\nerr\n" && got != "err\nout\n") {
			t.Fatalf("run %d: exit %d, %v, output %q", i, code, err, got)
		}
	}
}
