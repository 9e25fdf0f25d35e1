package agent

import (
	"context"
	"encoding/json"
	"errors"
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
)

// writeScript writes an executable shell script.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	must(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
	return p
}

// startStoppable runs the agent and returns a function that stops it and
// waits for Run to return (also called at cleanup).
func (e *testEnv) startStoppable(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := testutil.Receive(t, done, "the agent to stop"); err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	waitSocket(t, e.sock, done)
	return stop
}

// waitLines waits until path has n lines and returns them.
func waitLines(t *testing.T, path string, n int) []string {
	t.Helper()
	var lines []string
	testutil.WaitNoError(t, fmt.Sprintf("%d lines in %s", n, path), func() error {
		data, _ := os.ReadFile(path)
		lines = strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		if len(data) > 0 && len(lines) >= n {
			return nil
		}
		return fmt.Errorf("got %q", data)
	})
	return lines
}

// catchesTERM reports whether process pid has a handler for SIGTERM (for a
// shell: its trap is set), from the SigCgt mask in /proc/pid/status.
func catchesTERM(pid int) bool {
	data, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for line := range strings.Lines(string(data)) {
		if mask, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(mask), 16, 64)
			return err == nil && m&(1<<(syscall.SIGTERM-1)) != 0
		}
	}
	return false
}

// waitKeepAlive waits until process pid runs the keep-alive loop with its
// SIGTERM trap set and its sleep started: before the trap, a SIGTERM kills
// the shell instead of making it exit 0; before the sleep, a SIGTERM to the
// process group misses the sleep, which then outlives the shell.
func waitKeepAlive(t *testing.T, pid int) {
	t.Helper()
	testutil.WaitNoError(t, fmt.Sprintf("process %d to run the keep-alive loop with its trap set", pid), func() error {
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if !strings.Contains(string(cmdline), keepAliveScript) {
			return fmt.Errorf("cmdline %q", cmdline)
		}
		if !catchesTERM(pid) {
			return errors.New("no SIGTERM handler yet")
		}
		children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if len(strings.Fields(string(children))) == 0 {
			return errors.New("no sleep yet")
		}
		return nil
	})
}

// parentPid returns the parent of pid from /proc/pid/stat.
func parentPid(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	must(t, err)
	// pid (comm) state ppid ...; comm may contain spaces.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return atoi(t, fields[1])
}

func TestEntrypointKeepAlive(t *testing.T) {
	e := newTestEnv(t)
	marker := filepath.Join(e.dir, "marker")
	ep1 := writeScript(t, e.dir, "ep1", `echo "ep1 $$" >> `+marker+`; exec "$@"`)
	ep2 := writeScript(t, e.dir, "ep2", `echo "ep2 $$" >> `+marker+`; exec "$@"`)
	e.cfg.Entrypoints = []string{ep1, ep2}
	stop := e.startStoppable(t)

	lines := waitLines(t, marker, 2)
	pid := atoi(t, strings.TrimPrefix(lines[0], "ep1 "))
	// The chain leads its own process group: nothing of it outlives the test.
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	// Install order, one process (each entrypoint execs the next).
	if len(lines) != 2 || lines[1] != "ep2 "+strconv.Itoa(pid) {
		t.Fatalf("marker %q", lines)
	}
	if pp := parentPid(t, pid); pp != os.Getpid() {
		t.Errorf("chain's parent is %d, want the agent %d", pp, os.Getpid())
	}
	// The chain ends in the keep-alive loop.
	waitKeepAlive(t, pid)
	// Sessions work alongside it.
	if out, _, code := run(t, e.client(t), "echo ok"); out != "ok\n" || code != 0 {
		t.Errorf("session: %q exit %d", out, code)
	}

	// Shutdown sends it SIGTERM; the loop exits 0 by its trap (status
	// "exit 0": not killed by the grace period's SIGKILL).
	stop()
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		t.Errorf("chain process %d still exists after shutdown", pid)
	}
	if !strings.Contains(e.logs.String(), `msg="entrypoint exited" pid=`+strconv.Itoa(pid)+` status="exit 0"`) {
		t.Errorf("no exit 0 in the log:\n%s", e.logs.String())
	}
	if strings.Contains(e.logs.String(), "killed session processes") {
		t.Errorf("the keep-alive loop did not stop on SIGTERM:\n%s", e.logs.String())
	}
}

func TestEntrypointCommand(t *testing.T) {
	e := newTestEnv(t)
	marker := filepath.Join(e.dir, "marker")
	ep := writeScript(t, e.dir, "ep", `echo "ep $$" >> `+marker+`; exec "$@"`)
	e.cfg.Entrypoints = []string{ep}
	// Found in PATH, like an image's ENTRYPOINT ["sh", ...].
	e.cfg.Command = []string{"sh", "-c", `echo "cmd $$ $0 $1 $PWD $FROM_IMAGE" >> ` + marker + `; echo to-the-log; exit 3`, "a0", "a1"}
	e.cfg.EntrypointDir = e.cfg.WorkDir
	logFile, err := os.Create(filepath.Join(e.dir, "ep.log"))
	must(t, err)
	defer logFile.Close()
	e.cfg.entrypointOut = logFile
	e.start(t)

	lines := waitLines(t, marker, 2)
	pid := strings.TrimPrefix(lines[0], "ep ")
	if want := "cmd " + pid + " a0 a1 " + e.cfg.WorkDir + " yes"; lines[1] != want {
		t.Errorf("marker %q, want second line %q", lines, want)
	}
	// Its exit is logged; the agent goes on.
	testutil.WaitFor(t, "the chain's exit in the agent log", func() bool {
		return strings.Contains(e.logs.String(), `msg="entrypoint exited" pid=`+pid+` status="exit 3"`)
	})
	if out, _, code := run(t, e.client(t), "echo ok"); out != "ok\n" || code != 0 {
		t.Errorf("session after the chain exited: %q exit %d", out, code)
	}
	if data, _ := os.ReadFile(logFile.Name()); string(data) != "to-the-log\n" {
		t.Errorf("chain output %q, want it in the agent's log", data)
	}
}

func TestEntrypointArgv(t *testing.T) {
	if got := entrypointArgv(nil, nil); got != nil {
		t.Errorf("nothing to run: %q", got)
	}
	got := strings.Join(entrypointArgv([]string{"/a"}, nil), "|")
	if want := "/a|/bin/sh|-c|" + keepAliveScript; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	got = strings.Join(entrypointArgv(nil, []string{"/init", "x"}), "|")
	if got != "/init|x" {
		t.Errorf("got %q", got)
	}
}

// TestEntrypointPID1 runs the agent as PID 1 of a new pid namespace, as in
// an environment: the chain is its child and ends with the agent.
func TestEntrypointPID1(t *testing.T) {
	testutil.RequireRoot(t, "a pid namespace")
	e := newTestEnv(t)
	marker := filepath.Join(e.dir, "marker")
	ep := writeScript(t, e.dir, "ep", `echo "$$ $PPID" >> `+marker+`; exec "$@"`)
	hc, err := json.Marshal(helperConfig{
		Socket: e.sock, AuthorizedKeys: e.cfg.AuthorizedKeysPath,
		Passwd: e.cfg.passwdPath, Group: e.cfg.groupPath, User: e.cfg.User, WorkDir: e.cfg.WorkDir,
		PID1: true, Entrypoints: []string{ep},
	})
	must(t, err)
	exe, err := os.Executable()
	must(t, err)
	helper := exec.Command(exe, "reaper-agent")
	helper.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	helper.Env = append(os.Environ(), "COVE_AGENT_HELPER="+string(hc))
	var logs testutil.Buffer
	helper.Stdout, helper.Stderr = &logs, &logs
	helper.WaitDelay = time.Second
	must(t, helper.Start())
	exited := make(chan error, 1)
	go func() { exited <- helper.Wait() }()
	t.Cleanup(func() {
		helper.Process.Kill()
		if t.Failed() {
			t.Logf("helper log:\n%s", logs.String())
		}
	})
	waitSocket(t, e.sock, exited)

	got := waitLines(t, marker, 1)
	pid, ppid, _ := strings.Cut(got[0], " ")
	if len(got) != 1 || ppid != "1" {
		t.Fatalf("marker %q, want the chain's parent to be PID 1 (the agent)", got)
	}
	// $$ is the chain's pid in the namespace; /proc here shows the host's.
	var hostPid int
	testutil.WaitFor(t, "the chain among the agent's children", func() bool {
		for p := range childrenOf(helper.Process.Pid) {
			hostPid = p
			return true
		}
		return false
	})
	waitKeepAlive(t, hostPid)
	must(t, helper.Process.Signal(syscall.SIGTERM))
	if err := testutil.Receive(t, exited, "the agent to exit after SIGTERM"); err != nil {
		t.Errorf("agent exit: %v, want 0", err)
	}
	// "exit 0": the loop's trap ended it, not the grace period's SIGKILL.
	if !strings.Contains(logs.String(), `msg="entrypoint exited" pid=`+pid+` status="exit 0"`) {
		t.Errorf("no chain exit 0 in the log:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "killed session processes") {
		t.Errorf("the keep-alive loop did not stop on SIGTERM:\n%s", logs.String())
	}
}

// TestKeepAliveStopsOnTERM sends SIGTERM to the keep-alive shell alone once
// its trap is set, as when the signal reaches it before it has started the
// next sleep (the sleep never sees it): the shell must still exit 0 at
// once, not wait for a sleep of 1000 s.
func TestKeepAliveStopsOnTERM(t *testing.T) {
	sh := exec.Command("/bin/sh", "-c", keepAliveScript)
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	must(t, sh.Start())
	exited := make(chan error, 1)
	go func() { exited <- sh.Wait() }()
	// The sleep is the shell's child in the shell's process group.
	t.Cleanup(func() { syscall.Kill(-sh.Process.Pid, syscall.SIGKILL) })
	waitKeepAlive(t, sh.Process.Pid)
	must(t, sh.Process.Signal(syscall.SIGTERM))
	if err := testutil.Receive(t, exited, "the keep-alive shell to exit on SIGTERM"); err != nil {
		t.Errorf("keep-alive shell: %v, want exit 0 (its trap)", err)
	}
}
