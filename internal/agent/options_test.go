package agent

import (
	"bufio"
	"bytes"
	"io"
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

func (e *testEnv) clientAs(t *testing.T, user string) *gossh.Client {
	t.Helper()
	c, err := dialAgentAs(e.sock, e.signer, user)
	if err != nil {
		t.Fatalf("ssh dial as %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialAgentAs(sock string, signer gossh.Signer, user string) (*gossh.Client, error) {
	conf := &gossh.ClientConfig{
		User:            user,
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         testutil.MaxWait,
	}
	return gossh.Dial("unix", sock, conf)
}

// runEnv runs cmd in a session with the env requests env.
func runEnv(t *testing.T, c *gossh.Client, env map[string]string, cmd string) (string, string, int) {
	t.Helper()
	s, err := c.NewSession()
	must(t, err)
	defer s.Close()
	for k, v := range env {
		must(t, s.Setenv(k, v))
	}
	var stdout, stderr bytes.Buffer
	s.Stdout, s.Stderr = &stdout, &stderr
	code := exitCode(t, s.Run(cmd), &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

func TestLoginNameSelectsUser(t *testing.T) {
	testutil.RequireRoot(t, "to switch users")
	e := newTestEnv(t)
	e.start(t)
	for _, tc := range []struct{ login, want string }{
		{agentproto.DefaultUser, "0 me"}, // Config.User ("me" is the test's own uid)
		{"tester", "65534 tester"},
		{"65534", "65534 tester"},
		{"0", "0 me"}, // uid 0 is "me" in the test passwd
	} {
		out, stderr, code := run(t, e.clientAs(t, tc.login), `echo "$(id -u) $USER"`)
		if code != 0 || strings.TrimSpace(out) != tc.want {
			t.Errorf("login %s: got %q (stderr %q) exit %d, want %q", tc.login, out, stderr, code, tc.want)
		}
	}
	_, stderr, code := run(t, e.clientAs(t, "nobody-here"), "true")
	if code != 1 || !strings.Contains(stderr, `user "nobody-here" not found`) {
		t.Errorf("unknown login user: exit %d stderr %q", code, stderr)
	}
}

func TestExecArgv(t *testing.T) {
	e := newTestEnv(t)
	e.start(t)
	c := e.client(t)
	argv := map[string]string{agentproto.EnvExecArgv: "1"}
	out, stderr, code := runEnv(t, c, argv, `["printf","%s|","a b","$HOME",";","exit 3"]`)
	if code != 0 || out != "a b|$HOME|;|exit 3|" {
		t.Errorf("got %q (stderr %q) exit %d", out, stderr, code)
	}
	// Control variables do not reach the process.
	out, _, _ = runEnv(t, c, argv, `["env"]`)
	if strings.Contains(out, "COVE_") {
		t.Errorf("control variables leaked: %q", out)
	}
	_, stderr, code = runEnv(t, c, argv, `["no-such-program-xyz"]`)
	if code != 127 || !strings.Contains(stderr, "not found") {
		t.Errorf("missing program: exit %d stderr %q", code, stderr)
	}
	_, _, code = runEnv(t, c, argv, `not json`)
	if code != 1 {
		t.Errorf("bad argv: exit %d, want 1", code)
	}
	out, _, _ = runEnv(t, c, map[string]string{agentproto.EnvWorkDir: e.dir}, "pwd")
	if out != e.dir+"\n" {
		t.Errorf("%s: pwd = %q, want %q", agentproto.EnvWorkDir, out, e.dir)
	}
	_, stderr, code = runEnv(t, c, map[string]string{agentproto.EnvWorkDir: "/no/such/dir"}, "pwd")
	if code != 1 || !strings.Contains(stderr, "/no/such/dir does not exist") {
		t.Errorf("missing work dir: exit %d stderr %q", code, stderr)
	}
	_, stderr, code = runEnv(t, c, map[string]string{agentproto.EnvUserEnvProbe: "bogus"}, "true")
	if code != 1 || !strings.Contains(stderr, "bogus") {
		t.Errorf("bad probe mode: exit %d stderr %q", code, stderr)
	}
}

func TestUserEnvProbe(t *testing.T) {
	e := newTestEnv(t)
	// "me"'s home is e.dir. A login sh reads ~/.profile; an interactive sh
	// reads $ENV.
	must(t, os.WriteFile(filepath.Join(e.dir, ".profile"), []byte("echo profile noise\nexport PROBED=login WHO=profile\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(e.dir, "envrc"), []byte("echo rc noise\nexport PROBED=interactive\n"), 0o644))
	e.start(t)
	c := e.client(t)
	cmd := `echo "$PROBED $WHO"`
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{nil, " \n"},
		{map[string]string{agentproto.EnvUserEnvProbe: agentproto.ProbeNone}, " \n"},
		{map[string]string{agentproto.EnvUserEnvProbe: agentproto.ProbeLoginShell}, "login profile\n"},
		{map[string]string{agentproto.EnvUserEnvProbe: agentproto.ProbeInteractiveShell, "ENV": filepath.Join(e.dir, "envrc")}, "interactive \n"},
		{map[string]string{agentproto.EnvUserEnvProbe: agentproto.ProbeLoginInteractiveShell, "ENV": filepath.Join(e.dir, "envrc")}, "interactive profile\n"},
		// What the client sends (remoteEnv) wins.
		{map[string]string{agentproto.EnvUserEnvProbe: agentproto.ProbeLoginShell, "PROBED": "client"}, "client profile\n"},
	} {
		out, stderr, code := runEnv(t, c, tc.env, cmd)
		if code != 0 || out != tc.want {
			t.Errorf("env %v: got %q (stderr %q) exit %d, want %q", tc.env, out, stderr, code, tc.want)
		}
	}
	// The probe also applies to argv commands, and keeps the work directory.
	out, _, _ := runEnv(t, c, map[string]string{agentproto.EnvUserEnvProbe: agentproto.ProbeLoginShell, agentproto.EnvExecArgv: "1"}, `["sh","-c","echo $WHO; pwd"]`)
	if out != "profile\n"+e.cfg.WorkDir+"\n" {
		t.Errorf("argv with probe: %q", out)
	}
}

func TestLogsSubsystem(t *testing.T) {
	e := newTestEnv(t)
	e.cfg.LogPath = filepath.Join(e.dir, "lifecycle.log")
	e.cfg.logsPoll = 20 * time.Millisecond
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
	_, stderr, code := logs(nil)
	if code != 1 || !strings.Contains(stderr, "no creation or lifecycle logs yet") {
		t.Errorf("missing log: exit %d stderr %q", code, stderr)
	}
	must(t, os.WriteFile(e.cfg.LogPath, []byte("line 1\nline 2\n"), 0o644))
	out, _, code := logs(nil)
	if code != 0 || out != "line 1\nline 2\n" {
		t.Errorf("got %q, exit %d", out, code)
	}

	// Follow: existing content, then appended lines, across a truncation.
	s := openLogs(t, c, map[string]string{agentproto.EnvLogsFollow: "1"})
	lines := bufio.NewScanner(s.ch)
	expect := func(want string) {
		t.Helper()
		got := make(chan string, 1)
		go func() {
			if lines.Scan() {
				got <- lines.Text()
			} else {
				got <- "EOF"
			}
		}()
		if g := testutil.Receive(t, got, "followed line "+strconv.Quote(want)); g != want {
			t.Fatalf("followed line %q, want %q", g, want)
		}
	}
	expect("line 1")
	expect("line 2")
	f, err := os.OpenFile(e.cfg.LogPath, os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	f.WriteString("line 3\n")
	f.Close()
	expect("line 3")
	must(t, os.WriteFile(e.cfg.LogPath, []byte("new\n"), 0o644)) // truncated
	expect("new")
	tmp := e.cfg.LogPath + ".tmp"
	must(t, os.WriteFile(tmp, []byte("replaced\n"), 0o644))
	must(t, os.Rename(tmp, e.cfg.LogPath))
	expect("replaced")

	// Closing the channel ends the follow on the agent's side.
	before := strings.Count(e.logs.String(), `kind=logs status`)
	s.ch.Close()
	testutil.WaitFor(t, "the follow to stop after the client closed the channel", func() bool {
		return strings.Count(e.logs.String(), `kind=logs status`) > before
	})
}

type rawSession struct {
	ch     gossh.Channel
	status chan int
}

// exit waits for the exit status (-1 if none came).
func (r *rawSession) exit() int {
	select {
	case c := <-r.status:
		return c
	case <-time.After(testutil.MaxWait):
		return -1
	}
}

// openLogs opens the logs subsystem on a raw session channel
// (gossh.Session cannot wait for a subsystem's exit status).
func openLogs(t *testing.T, c *gossh.Client, env map[string]string) *rawSession {
	t.Helper()
	ch, reqs, err := c.OpenChannel("session", nil)
	must(t, err)
	r := &rawSession{ch: ch, status: make(chan int, 1)}
	go func() {
		for req := range reqs {
			if req.Type == "exit-status" {
				var st struct{ Status uint32 }
				gossh.Unmarshal(req.Payload, &st)
				r.status <- int(st.Status)
			}
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}()
	for k, v := range env {
		ok, err := ch.SendRequest("env", true, gossh.Marshal(struct{ Name, Value string }{k, v}))
		if err != nil || !ok {
			t.Fatalf("env request: %v %v", ok, err)
		}
	}
	ok, err := ch.SendRequest("subsystem", true, gossh.Marshal(struct{ Name string }{agentproto.LogsSubsystem}))
	if err != nil || !ok {
		t.Fatalf("subsystem request: %v %v", ok, err)
	}
	return r
}
