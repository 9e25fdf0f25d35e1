package procgroups

import (
	"context"
	"fmt"
	"io"
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
	"golang.org/x/sys/unix"
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
	// As when started by a shell with a short slice: the loop gives the
	// workload the default back.
	slices := customSlices(t)
	if slices {
		for _, pid := range []int{busy, daemon} {
			if err := SetSlice("/proc", pid, ShortSlice); err != nil {
				t.Fatal(err)
			}
		}
	}

	// A low threshold: the spinner gets at least this much of a CPU
	// however loaded the host is.
	l := &Loop{Cgroups: f, Params: Params{DemoteShare: 0.02, PromoteAfter: time.Hour},
		Envs:     func() []Env { return []Env{{ID: "e", Cgroup: cg}} },
		SetSlice: func(pid int, d time.Duration) error { return SetSlice("/proc", pid, d) }}
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
	if slices {
		def := sliceOf(t, os.Getpid())
		for pid, g := range want {
			wantSlice := uint64(Slice(g).Nanoseconds())
			if wantSlice == 0 {
				wantSlice = def
			}
			if got := sliceOf(t, pid); got != wantSlice {
				t.Errorf("process %d (%s): slice %d ns, want %d", pid, g, got, wantSlice)
			}
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

// foreignPid lists, with the container's processes, a process that is
// not in it: as when a pid read from cgroup.procs was reused by another
// process before the loop acted on it.
type foreignPid struct {
	*Files
	pid int
}

func (f foreignPid) Procs(cg string, g Group) ([]int, error) {
	pids, err := f.Files.Procs(cg, g)
	if g == Root {
		pids = append(pids, f.pid)
	}
	return pids, err
}

// TestForeignPidNeverMoved: a process outside the environment's cgroup
// whose pid the loop is given (pid reuse) is neither moved into the
// environment nor re-scored.
func TestForeignPidNeverMoved(t *testing.T) {
	f, cg := realCgroup(t)
	daemon := start(t, f, cg, exec.Command("sleep", "1000"), false)
	host := exec.Command("sleep", "1000") // on the host, outside cg
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = host.Process.Kill(); _ = host.Wait() })
	hostCgroup, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(host.Process.Pid), "cgroup"))
	if err != nil {
		t.Fatal(err)
	}
	hostScore := oomScoreAdj(t, host.Process.Pid)
	l := &Loop{Cgroups: foreignPid{f, host.Process.Pid}, Envs: func() []Env { return []Env{{ID: "e", Cgroup: cg}} }}
	testutil.WaitFor(t, "the environment's own process sorted", func() bool {
		l.Tick(context.Background())
		return groupOf(t, f, cg, daemon) == Workload
	})
	got, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(host.Process.Pid), "cgroup"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(hostCgroup) {
		t.Errorf("host process moved:\n%s\nwas\n%s", got, hostCgroup)
	}
	if s := oomScoreAdj(t, host.Process.Pid); s != hostScore {
		t.Errorf("host process's oom_score_adj %d, was %d", s, hostScore)
	}
}

// TestNestedInitIsNotTheAgent: a process that made itself PID 1 of a pid
// namespace of its own, inside the environment's, is not taken for the
// agent: it is sorted as any other (a CPU spinner without a terminal:
// workload).
func TestNestedInitIsNotTheAgent(t *testing.T) {
	testutil.RequireTool(t, "unshare")
	f, cg := realCgroup(t)
	// The environment's PID 1 waits to be in cg, then starts the nested
	// spinner: it is born in cg.
	cmd := exec.Command("sh", "-c", `read x; exec unshare -p -f -- sh -c 'while :; do :; done'`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	start(t, f, cg, cmd, false)
	if _, err := io.WriteString(in, "go\n"); err != nil {
		t.Fatal(err)
	}
	l := &Loop{Cgroups: f, Envs: func() []Env { return []Env{{ID: "e", Cgroup: cg}} }}
	var nested int
	testutil.WaitFor(t, "the nested PID 1 sorted into workload", func() bool {
		l.Tick(context.Background())
		nested = 0
		for _, g := range append([]Group{Root}, Groups...) {
			pids, _ := f.Procs(cg, g)
			for _, pid := range pids {
				ns, err := nsPids("/proc", pid)
				if err == nil && len(ns) > 2 && ns[len(ns)-1] == "1" {
					nested = pid
					if g != Workload {
						return false
					}
				}
			}
		}
		return nested != 0
	})
	if s := oomScoreAdj(t, nested); s < OOMFloor(Workload) {
		t.Errorf("nested PID 1: oom_score_adj %d", s)
	}
}

// TestWorkloadAlwaysScored: processes forking fast never have a process
// in workload with less than its OOM floor (the score is raised before a
// process moves, so what it forks inherits it).
func TestWorkloadAlwaysScored(t *testing.T) {
	f, cg := realCgroup(t)
	for range 3 {
		start(t, f, cg, exec.Command("sh", "-c", "while :; do sleep 0.05 & wait; done"), false)
	}
	l := &Loop{Cgroups: f, Envs: func() []Env { return []Env{{ID: "e", Cgroup: cg}} }}
	for i := range 20 {
		l.Tick(context.Background())
		pids, err := f.Procs(cg, Workload)
		if err != nil {
			t.Fatal(err)
		}
		for _, pid := range pids {
			b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "oom_score_adj"))
			if err != nil {
				continue // exited
			}
			if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n < OOMFloor(Workload) {
				t.Fatalf("tick %d: process %d in workload with oom_score_adj %d", i, pid, n)
			}
		}
	}
}

// sliceOf is process pid's (main thread's) time slice.
func sliceOf(t *testing.T, pid int) uint64 {
	t.Helper()
	a, err := unix.SchedGetAttr(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	return a.Runtime
}

// customSlices reports whether this kernel keeps a slice asked for (Linux
// 6.12+); the test's slice checks are logged as skipped otherwise.
func customSlices(t *testing.T) bool {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := SetSlice("/proc", cmd.Process.Pid, ShortSlice); err != nil {
		t.Fatal(err)
	}
	if sliceOf(t, cmd.Process.Pid) != uint64(ShortSlice.Nanoseconds()) {
		t.Log("this kernel does not keep a time slice asked for (before Linux 6.12): slices not checked")
		return false
	}
	return true
}
