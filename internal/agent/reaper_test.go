package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	gossh "golang.org/x/crypto/ssh"
)

// childrenOf lists the pids whose parent is ppid, with their state letter.
func childrenOf(ppid int) map[int]string {
	out := make(map[int]string)
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces.
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if p, _ := strconv.Atoi(f[1]); p == ppid {
			pid, _ := strconv.Atoi(strings.Fields(s)[0])
			out[pid] = f[0] + " " + s[strings.IndexByte(s, '(')+1:i]
		}
	}
	return out
}

// TestReaper runs the agent in init mode in a helper process that is a child
// subreaper, so orphans of sessions are reparented to it as they would be to
// PID 1: every one must be reaped, every session must still get its own
// exit status, and SIGTERM must end sessions and the agent cleanly.
func TestReaper(t *testing.T) {
	t.Run("subreaper", func(t *testing.T) { testReaper(t, false) })
	t.Run("pid1", func(t *testing.T) {
		testutil.RequireRoot(t, "a pid namespace")
		testReaper(t, true)
	})
}

// testReaper runs the helper agent as a child subreaper with the reap knob
// set, or (pid1) as PID 1 of a new pid namespace, where it must detect that
// it is init by itself.
func testReaper(t *testing.T, pid1 bool) {
	e := newTestEnv(t)
	hc, err := json.Marshal(helperConfig{
		Socket: e.sock, AuthorizedKeys: e.cfg.AuthorizedKeysPath,
		Passwd: e.cfg.passwdPath, Group: e.cfg.groupPath, User: e.cfg.User, WorkDir: e.cfg.WorkDir,
		PID1: pid1,
	})
	must(t, err)
	exe, err := os.Executable()
	must(t, err)
	helper := exec.Command(exe, "reaper-agent")
	if pid1 {
		helper.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	}
	helper.Env = append(os.Environ(), "COVE_AGENT_HELPER="+string(hc))
	var logs testutil.Buffer
	helper.Stdout, helper.Stderr = &logs, &logs
	helper.WaitDelay = time.Second
	must(t, helper.Start())
	exited := make(chan error, 1) // one value, taken by whoever sees the exit first
	waited := make(chan struct{})
	go func() { exited <- helper.Wait(); close(waited) }()
	t.Cleanup(func() {
		helper.Process.Kill()
		<-waited
		if t.Failed() {
			t.Logf("helper log:\n%s", logs.String())
		}
	})
	waitSocket(t, e.sock, exited)
	c := e.client(t)
	pid := helper.Process.Pid

	// An orphan is reparented to the agent while it runs. It lives until
	// the test kills it, below, so the look cannot miss it on a slow machine.
	out, _, code := run(t, c, "(sleep 1000 </dev/null >/dev/null 2>&1 &); echo spawned")
	if out != "spawned\n" || code != 0 {
		t.Fatalf("got %q exit %d", out, code)
	}
	orphan := 0
	for p, desc := range childrenOf(pid) {
		if strings.HasSuffix(desc, " sleep") {
			orphan = p
		}
	}
	if orphan == 0 {
		t.Errorf("orphaned sleep not reparented to the agent: %v", childrenOf(pid))
	} else {
		must(t, syscall.Kill(orphan, syscall.SIGKILL)) // the agent must reap it
	}

	// Many sessions at once, each leaving orphans behind, each with its own status.
	const n = 20
	errs := make(chan error, n)
	for i := range n {
		go func() {
			s, err := c.NewSession()
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			var stdout bytes.Buffer
			s.Stdout = &stdout
			err = s.Run(fmt.Sprintf("(sh -c 'exit 9' &); (sleep 0.1 </dev/null >/dev/null 2>&1 &); echo %d; exit %d", i, i))
			got := 0
			if ee, ok := err.(*gossh.ExitError); ok {
				got = ee.ExitStatus()
			} else if err != nil {
				errs <- err
				return
			}
			if got != i || stdout.String() != fmt.Sprintf("%d\n", i) {
				errs <- fmt.Errorf("session %d: exit %d, output %q", i, got, stdout.String())
				return
			}
			errs <- nil
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}

	// All orphans are gone, none left as a zombie.
	testutil.WaitNoError(t, "the agent to reap every orphan", func() error {
		if left := childrenOf(pid); len(left) > 0 {
			return fmt.Errorf("agent children left: %v", left)
		}
		return nil
	})

	// SIGTERM: the running session is terminated, the agent exits 0. The
	// signal goes once the session's process runs (it said so), not while
	// the agent may still be starting it.
	s, err := c.NewSession()
	must(t, err)
	stdout, err := s.StdoutPipe()
	must(t, err)
	must(t, s.Start("echo running; exec sleep 60"))
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "running\n" {
		t.Fatalf("session said %q (%v), want running", line, err)
	}
	sessionDone := make(chan error, 1)
	go func() { sessionDone <- s.Wait() }()
	must(t, helper.Process.Signal(syscall.SIGTERM))
	err = testutil.Receive(t, sessionDone, "the session to end after SIGTERM")
	if ee, ok := err.(*gossh.ExitError); !ok || (ee.Signal() != "TERM" && ee.ExitStatus() != 143) {
		t.Errorf("session after SIGTERM: %v, want terminated by TERM", err)
	}
	if err := testutil.Receive(t, exited, "the agent to exit after SIGTERM"); err != nil {
		t.Errorf("agent exit: %v, want 0", err)
	}
	if _, err := os.Stat(e.sock); err == nil {
		t.Errorf("socket %s left behind", e.sock)
	}
	if !strings.Contains(logs.String(), "init=true") {
		t.Errorf("agent did not run in init mode")
	}
}
