package procgroups

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	"github.com/creack/pty"
)

// realCgroup makes a cgroup for the test in this host's cpu hierarchy and
// removes it (and the groups below it) at the end, after the test's
// processes were killed.
func realCgroup(t *testing.T) (*Files, string) {
	t.Helper()
	testutil.RequireRoot(t, "it makes cgroups and moves processes between them")
	f, err := HostFiles()
	if err != nil {
		t.Skipf("no cgroup hierarchy: %v", err)
	}
	cg := fmt.Sprintf("/cove-test-procgroups-%d", os.Getpid())
	if err := os.Mkdir(f.dir(cg, Root), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, g := range append(slices.Clone(Groups), Root) {
			d := f.dir(cg, g)
			for range 100 {
				if err := os.Remove(d); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(20 * time.Millisecond) // killed processes leaving
			}
		}
	})
	return f, cg
}

// start starts cmd (on a terminal of its own if tty) in cgroup cg and
// kills it at the end of the test.
func start(t *testing.T, f *Files, cg string, cmd *exec.Cmd, tty bool) int {
	t.Helper()
	if tty {
		p, err := pty.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
	} else if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := f.Move(cg, Root, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func groupOf(t *testing.T, f *Files, cg string, pid int) Group {
	t.Helper()
	for _, g := range append([]Group{Root}, Groups...) {
		pids, err := f.Procs(cg, g)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if slices.Contains(pids, pid) {
			return g
		}
	}
	return "(none)"
}

func oomScoreAdj(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "oom_score_adj"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLoopSortsRealProcesses runs the loop on a real cgroup holding an
// environment's kinds of processes: PID 1 of a pid namespace (the agent),
// an idle terminal shell, a terminal job that burns CPU and a process
// without a terminal. Each ends up in its group, with its OOM score
// raised to the group's floor (the agent's left alone).
func TestLoopSortsRealProcesses(t *testing.T) {
	f, cg := realCgroup(t)
	initCmd := exec.Command("sleep", "1000")
	initCmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	agent := start(t, f, cg, initCmd, false)
	idle := start(t, f, cg, exec.Command("sh", "-c", "read x"), true)
	busy := start(t, f, cg, exec.Command("sh", "-c", "while :; do :; done"), true)
	daemon := start(t, f, cg, exec.Command("sleep", "1000"), false)
	agentScore := oomScoreAdj(t, agent)

	// A low threshold: the spinner gets at least this much of a CPU
	// however loaded the host is.
	l := &Loop{Cgroups: f, Params: Params{DemoteShare: 0.02, PromoteAfter: time.Hour},
		Envs: func() []Env { return []Env{{ID: "e", Cgroup: cg}} }}
	want := map[int]Group{agent: Agent, idle: Interactive, busy: Workload, daemon: Workload}
	testutil.WaitFor(t, "every process in its group", func() bool {
		l.Tick(context.Background())
		for pid, g := range want {
			if groupOf(t, f, cg, pid) != g {
				return false
			}
		}
		return true
	})
	if got := oomScoreAdj(t, agent); got != agentScore {
		t.Errorf("agent's oom_score_adj changed: %d, was %d", got, agentScore)
	}
	for pid, floor := range map[int]int{idle: OOMFloor(Interactive), busy: OOMFloor(Workload), daemon: OOMFloor(Workload)} {
		if got := oomScoreAdj(t, pid); got < floor {
			t.Errorf("process %d (%s): oom_score_adj %d, want at least %d", pid, groupOf(t, f, cg, pid), got, floor)
		}
	}
	// The idle shell stays where it is.
	for range 3 {
		l.Tick(context.Background())
	}
	if g := groupOf(t, f, cg, idle); g != Interactive {
		t.Errorf("idle terminal shell moved to %s", g)
	}
}
