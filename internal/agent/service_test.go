package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/testutil"
)

// runService runs the agent in service mode until Run returns by itself,
// and returns Run's result. cancelAfterStart, when set, is called once the
// socket is up with a function that stops the agent (as SIGTERM would).
func (e *testEnv) runService(t *testing.T, cancelAfterStart func(stop func())) error {
	t.Helper()
	e.cfg.ExitWithCommand = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg) }()
	if cancelAfterStart != nil {
		waitSocket(t, e.sock, done)
		cancelAfterStart(cancel)
	}
	select {
	case err := <-done:
		if _, statErr := os.Stat(e.sock); statErr == nil {
			t.Errorf("socket %s left behind", e.sock)
		}
		return err
	case <-time.After(testutil.Patience(t)):
		cancel()
		t.Fatal("agent did not exit with its command")
		return nil
	}
}

func wantExit(t *testing.T, err error, code int) {
	t.Helper()
	var ee *ExitError
	switch {
	case code == 0 && err != nil:
		t.Errorf("Run: %v, want nil for exit code 0", err)
	case code != 0 && !errors.As(err, &ee):
		t.Errorf("Run: %v, want an *ExitError with code %d", err, code)
	case code != 0 && ee.Code != code:
		t.Errorf("Run: exit code %d, want %d", ee.Code, code)
	}
}

func TestServiceExitCode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		command []string
		stop    bool // stop the agent (SIGTERM) while the command runs
		code    int
		log     string
	}{
		{name: "success", command: []string{"sh", "-c", "echo served"}, code: 0},
		{name: "failure", command: []string{"sh", "-c", "exit 3"}, code: 3},
		{name: "signal", command: []string{"sh", "-c", "kill -KILL $$"}, code: 128 + 9},
		{name: "stopped", command: []string{"sh", "-c", `trap "exit 5" TERM; echo trapped; while :; do sleep 0.05; done`}, stop: true, code: 5},
		{name: "missing program", command: []string{"no-such-program-here"}, code: 127, log: "command not found"},
		{name: "nothing to run", code: 127, log: "no command to run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.cfg.Command = tc.command
			e.cfg.ExitCodeFile = filepath.Join(e.dir, "exit-code")
			out, err := os.Create(filepath.Join(e.dir, "console"))
			must(t, err)
			defer out.Close()
			e.cfg.entrypointOut = out
			var stop func(func())
			if tc.stop {
				stop = func(cancel func()) {
					// Stop once the command says its trap is set.
					testutil.WaitFor(t, "the command's trap", func() bool {
						data, _ := os.ReadFile(out.Name())
						return string(data) == "trapped\n"
					})
					cancel()
				}
			}
			wantExit(t, e.runService(t, stop), tc.code)
			// Its own exit ended it, not the shutdown grace's SIGKILL.
			if strings.Contains(e.logs.String(), "killed session processes") {
				t.Errorf("the command was killed:\n%s", e.logs.String())
			}
			data, err := os.ReadFile(e.cfg.ExitCodeFile)
			if err != nil || string(data) != strconv.Itoa(tc.code)+"\n" {
				t.Errorf("exit code file %q (%v), want %q", data, err, strconv.Itoa(tc.code)+"\n")
			}
			if tc.log != "" && !strings.Contains(e.logs.String(), tc.log) {
				t.Errorf("log lacks %q:\n%s", tc.log, e.logs.String())
			}
			if tc.name == "success" {
				if data, _ := os.ReadFile(out.Name()); string(data) != "served\n" {
					t.Errorf("console %q", data)
				}
			}
		})
	}
}

func TestCommandUser(t *testing.T) {
	testutil.RequireRoot(t, "to run the command as another user")
	for _, tc := range []struct{ user, want string }{
		{"tester", "65534 65534 65534 4242"},
		{"65534:4242", "65534 4242 4242"},
		{"", "0 0 0"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			e := newTestEnv(t)
			e.cfg.CommandUser = tc.user
			e.cfg.Env = []string{"PATH=/usr/bin:/bin"}
			e.cfg.Command = []string{"sh", "-c", `echo "$(id -u) $(id -g) $(id -G)"; echo "$HOME" >&2`}
			out, err := os.Create(filepath.Join(e.dir, "console"))
			must(t, err)
			defer out.Close()
			e.cfg.entrypointOut = out
			wantExit(t, e.runService(t, nil), 0)
			data, _ := os.ReadFile(out.Name())
			lines := strings.SplitN(string(data), "\n", 2)
			if len(lines) != 2 {
				t.Fatalf("console %q", data)
			}
			// uid, gid, then all groups (id -G lists the primary one too).
			if !sameIDs(lines[0], tc.want) {
				t.Errorf("ids %q, want %q", lines[0], tc.want)
			}
			home := filepath.Join(e.dir, "home") // tester's, also found by uid
			if tc.user == "" {
				home = e.dir // passwd's entry for the test's uid (0): "me"
			}
			if lines[1] != home+"\n" {
				t.Errorf("HOME %q, want %q", lines[1], home)
			}
		})
	}
}

// sameIDs compares "uid gid groups..." lines as uid, gid and a set of
// groups.
func sameIDs(got, want string) bool {
	g, w := strings.Fields(got), strings.Fields(want)
	if len(g) < 2 || len(w) < 2 || g[0] != w[0] || g[1] != w[1] {
		return false
	}
	set := func(ids []string) map[string]bool {
		m := map[string]bool{}
		for _, id := range ids {
			m[id] = true
		}
		return m
	}
	gs, ws := set(g[2:]), set(w[2:])
	if len(gs) != len(ws) {
		return false
	}
	for id := range ws {
		if !gs[id] {
			return false
		}
	}
	return true
}

func TestCommandUserUnknown(t *testing.T) {
	// Outside service mode the agent stays up, as for any start failure.
	e := newTestEnv(t)
	marker := filepath.Join(e.dir, "ran")
	e.cfg.CommandUser = "nobody-here"
	e.cfg.Command = []string{"sh", "-c", "touch " + marker}
	e.start(t)
	testutil.WaitFor(t, "the start failure in the agent log", func() bool {
		return strings.Contains(e.logs.String(), `user \"nobody-here\" not found`)
	})
	if out, _, code := run(t, e.client(t), "echo ok"); out != "ok\n" || code != 0 {
		t.Errorf("session: %q exit %d", out, code)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the command ran despite the unknown user")
	}

	// In service mode it exits 127.
	e2 := newTestEnv(t)
	e2.cfg.CommandUser = "nobody-here"
	e2.cfg.Command = []string{"sh", "-c", "touch " + marker}
	e2.cfg.ExitCodeFile = filepath.Join(e2.dir, "exit-code")
	wantExit(t, e2.runService(t, nil), 127)
	if data, _ := os.ReadFile(e2.cfg.ExitCodeFile); string(data) != "127\n" {
		t.Errorf("exit code file %q", data)
	}
}

func TestServiceLogs(t *testing.T) {
	e := newTestEnv(t)
	e.cfg.LogPath = filepath.Join(e.dir, "log", "lifecycle.log")
	e.cfg.logsPoll = 20 * time.Millisecond
	services := filepath.Join(e.dir, "log", "services")
	must(t, os.MkdirAll(services, 0o755))
	must(t, os.WriteFile(e.cfg.LogPath, []byte("lifecycle\n"), 0o644))
	e.start(t)
	c := e.client(t)

	logs := func(env map[string]string) (string, string, int) {
		ch := openLogs(t, c, env)
		defer ch.ch.Close()
		var stdout, stderr bytes.Buffer
		done := make(chan struct{})
		go func() { io.Copy(&stderr, ch.ch.Stderr()); close(done) }()
		io.Copy(&stdout, ch.ch)
		<-done
		return stdout.String(), stderr.String(), ch.exit()
	}

	_, stderr, code := logs(map[string]string{agentproto.EnvLogsService: "db"})
	if want := `no logs for service "db" (is it a service of this environment?)`; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("missing service log: exit %d stderr %q, want %q", code, stderr, want)
	}
	for _, bad := range []string{"../lifecycle", "a/b", ".hidden", "..", "-x", "db\x00", strings.Repeat("x", 300)} {
		out, stderr, code := logs(map[string]string{agentproto.EnvLogsService: bad})
		if code != 1 || !strings.Contains(stderr, "invalid service name") || out != "" {
			t.Errorf("service %q: exit %d stdout %q stderr %q, want refused", bad, code, out, stderr)
		}
	}

	must(t, os.WriteFile(filepath.Join(services, "db.log"), []byte("db ready\n"), 0o644))
	out, _, code := logs(map[string]string{agentproto.EnvLogsService: "db"})
	if code != 0 || out != "db ready\n" {
		t.Errorf("service log: %q exit %d", out, code)
	}
	if out, _, _ := logs(nil); out != "lifecycle\n" {
		t.Errorf("lifecycle log: %q", out)
	}

	// Follow a service whose log does not exist yet.
	s := openLogs(t, c, map[string]string{agentproto.EnvLogsService: "cache.v2", agentproto.EnvLogsFollow: "1"})
	defer s.ch.Close()
	var got testutil.Buffer
	go io.Copy(&got, s.ch)
	// Create the log once the follow has started (it then looks for the
	// file right away and finds none).
	testutil.WaitFor(t, "the follow to start", func() bool {
		return strings.Contains(e.logs.String(), "follow=true service=cache.v2")
	})
	p := filepath.Join(services, "cache.v2.log")
	must(t, os.WriteFile(p, []byte("one\n"), 0o644))
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	f.WriteString("two\n")
	f.Close()
	testutil.WaitNoError(t, "the followed lines", func() error {
		if g := got.String(); g != "one\ntwo\n" {
			return fmt.Errorf("followed %q, want %q", g, "one\ntwo\n")
		}
		return nil
	})
}
