package agent

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/testutil"
	gossh "golang.org/x/crypto/ssh"
)

// attachSession runs cmd in a session that asks for the postAttachCommands.
func attachSession(t *testing.T, c *gossh.Client, cmd string, env ...string) (string, string, int) {
	t.Helper()
	s := mustSession(t, c)
	must(t, s.Setenv(agentproto.EnvPostAttach, "1"))
	for i := 0; i+1 < len(env); i += 2 {
		must(t, s.Setenv(env[i], env[i+1]))
	}
	var stdout, stderr bytes.Buffer
	s.Stdout, s.Stderr = &stdout, &stderr
	code := exitCode(t, s.Run(cmd), &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

func TestPostAttach(t *testing.T) {
	e := newTestEnv(t)
	d := e.dir
	e.cfg.PostAttachPath = filepath.Join(d, "post-attach.json")
	must(t, os.WriteFile(e.cfg.PostAttachPath, []byte(`[
	  {"Shell": "echo first >> `+d+`/marker; echo pa-out; echo pa-err >&2", "Args": null, "Parallel": null, "Origin": "devcontainer.json"},
	  {"Shell": "", "Args": null, "Parallel": {
	    "a": {"Shell": "echo a > `+d+`/marker.a", "Args": null, "Parallel": null, "Origin": ""},
	    "b": {"Shell": "", "Args": ["sh", "-c", "pwd > `+d+`/marker.b; echo $FROM_IMAGE $COVE_TEST $USER >> `+d+`/marker.b"], "Parallel": null, "Origin": ""}
	  }, "Origin": "Feature 'ghcr.io/x/y:1'"}
	]`), 0o644))
	e.start(t)
	c := e.client(t)

	// Without the request nothing runs.
	if out, _, code := run(t, c, "echo plain"); out != "plain\n" || code != 0 {
		t.Fatalf("plain session: %q exit %d", out, code)
	}
	if _, err := os.Stat(filepath.Join(d, "marker")); err == nil {
		t.Fatal("postAttachCommand ran for a session that did not ask")
	}

	// With it they run first, then the session's command.
	out, stderr, code := attachSession(t, c, "cat "+d+"/marker", "COVE_TEST", "v")
	if out != "first\n" || code != 0 {
		t.Fatalf("session: %q exit %d (stderr %q)", out, code, stderr)
	}
	for _, want := range []string{
		"Running the postAttachCommand from devcontainer.json...\n$ echo first",
		"pa-out\n", "pa-err\n",
		"Running the postAttachCommand from Feature 'ghcr.io/x/y:1'...\n",
		"[a] $ echo a", "[b] $ sh -c 'pwd > ",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q lacks %q", stderr, want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(d, "marker.a")); string(b) != "a\n" {
		t.Errorf("marker.a = %q", b)
	}
	// The session's directory, environment and user.
	if b, _ := os.ReadFile(filepath.Join(d, "marker.b")); string(b) != e.cfg.WorkDir+"\nyes v me\n" {
		t.Errorf("marker.b = %q", b)
	}

	// A pty session gets the output on its terminal.
	s := mustSession(t, c)
	must(t, s.RequestPty("xterm", 24, 80, gossh.TerminalModes{}))
	must(t, s.Setenv(agentproto.EnvPostAttach, "1"))
	raw, err := s.Output("tty >/dev/null && echo on-a-tty")
	must(t, err)
	if !bytes.Contains(raw, []byte("pa-out\r\n")) || !bytes.Contains(raw, []byte("on-a-tty")) {
		t.Errorf("pty output %q", raw)
	}

	// A failure stops the list but not the session.
	must(t, os.WriteFile(e.cfg.PostAttachPath, []byte(`[{"Shell": "exit 3"}, {"Shell": "touch `+d+`/never"}]`), 0o644))
	out, stderr, code = attachSession(t, c, "echo after; exit 5")
	if out != "after\n" || code != 5 {
		t.Errorf("session after a failure: %q exit %d", out, code)
	}
	if !strings.Contains(stderr, "postAttachCommand failed with exit code 3: exit 3\n") {
		t.Errorf("stderr %q lacks the failure", stderr)
	}
	if _, err := os.Stat(filepath.Join(d, "never")); err == nil {
		t.Error("the command after the failing one ran")
	}

	// A parallel member that fails or cannot run: its output keeps its
	// prefix, the failure is reported and the list stops.
	must(t, os.WriteFile(e.cfg.PostAttachPath, []byte(`[{"Parallel": {
	    "bad": {"Shell": "echo failing; exit 4"}, "gone": {"Args": ["cove-no-such-command"]}}},
	  {"Shell": "touch `+d+`/never"}]`), 0o644))
	out, stderr, code = attachSession(t, c, "echo after")
	if out != "after\n" || code != 0 {
		t.Errorf("session after a parallel failure: %q exit %d", out, code)
	}
	for _, want := range []string{
		"[bad] failing\n",
		"postAttachCommand \"bad\" failed with exit code 4: echo failing; exit 4\n",
		"[gone] cove: ",
		"postAttachCommand \"gone\" could not run: cove-no-such-command\n",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q lacks %q", stderr, want)
		}
	}
	if _, err := os.Stat(filepath.Join(d, "never")); err == nil {
		t.Error("the command after the failing one ran")
	}

	// No list, no commands: the session just runs.
	must(t, os.Remove(e.cfg.PostAttachPath))
	if out, stderr, code := attachSession(t, c, "echo bare"); out != "bare\n" || stderr != "" || code != 0 {
		t.Errorf("without a list: %q %q exit %d", out, stderr, code)
	}
}

func TestPostAttachClientLeaves(t *testing.T) {
	e := newTestEnv(t)
	e.cfg.PostAttachPath = filepath.Join(e.dir, "post-attach.json")
	pidFile := filepath.Join(e.dir, "pid")
	must(t, os.WriteFile(e.cfg.PostAttachPath, []byte(`[{"Shell": "echo $$ > `+pidFile+`; exec sleep 60"}]`), 0o644))
	e.start(t)
	c := e.client(t)
	s, err := c.NewSession()
	must(t, err)
	must(t, s.Setenv(agentproto.EnvPostAttach, "1"))
	must(t, s.Start("touch "+e.dir+"/ran"))
	pid := atoi(t, waitLines(t, pidFile, 1)[0])
	s.Close()
	// The command is stopped and the session's own never starts.
	testutil.WaitFor(t, fmt.Sprintf("postAttachCommand %d to stop after the client left", pid), func() bool {
		_, err := os.Stat("/proc/" + strconv.Itoa(pid))
		return err != nil
	})
	// Nothing tells when the agent has decided not to start it: give a
	// command started by mistake a moment to show. (This sleep can only
	// miss a regression, never fail the test on a slow machine.)
	time.Sleep(200 * time.Millisecond)
	if _, err := os.Stat(filepath.Join(e.dir, "ran")); err == nil {
		t.Error("the session's command ran after the client left")
	}
}
