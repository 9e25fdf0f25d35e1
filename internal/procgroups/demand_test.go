package procgroups

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeGroups are groups in memory: the processes in each, and the moves
// made.
type fakeGroups struct {
	mu    sync.Mutex
	procs map[Group][]int
	moves map[int]Group
}

func (f *fakeGroups) Setup(string) error { return nil }
func (f *fakeGroups) Procs(_ string, g Group) ([]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.procs[g]...), nil
}
func (f *fakeGroups) Move(_ string, g Group, pid int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.moves[pid] = g
	return nil
}
func (f *fakeGroups) Holds(string, []byte) bool { return true }

// fakeProc writes what /proc says of process pid below root: a terminal
// process that used cpu and was runnable for runnable.
func fakeProc(t *testing.T, root string, pid int, cpu, runnable time.Duration) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	ticks := int64(cpu / clockTick)
	stat := fmt.Sprintf("%d (spin) R 1 %d %d 34816 %d 4194304 0 0 0 0 %d 0 0 0 20 0 1 0 4242 1000000 200 0\n", pid, pid, pid, pid, ticks)
	files := map[string]string{
		"stat":          stat,
		"schedstat":     fmt.Sprintf("%d %d 17\n", cpu.Nanoseconds(), (runnable - cpu).Nanoseconds()),
		"cgroup":        "4:cpu,cpuacct:/cove/e1/interactive\n",
		"oom_score_adj": "0\n",
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLoopDemotesByDemand runs the loop over a fake /proc: a terminal job
// that obtained 5% of a CPU in a second but was runnable throughout (what
// its schedstat says) is moved to workload, its OOM score raised. The
// process is a real one (the loop pins it by a pidfd before moving it);
// what /proc says of it is the fake's.
func TestLoopDemotesByDemand(t *testing.T) {
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	proc := t.TempDir()
	fakeProc(t, proc, pid, 0, 0)
	g := &fakeGroups{procs: map[Group][]int{Interactive: {pid}}, moves: map[int]Group{}}
	now := t0
	l := &Loop{Cgroups: g, Proc: proc, Params: DefaultParams, Now: func() time.Time { return now },
		Envs: func() []Env { return []Env{{ID: "e1", Cgroup: "/cove/e1"}} }}
	l.Tick(context.Background())
	if len(g.moves) != 0 {
		t.Fatalf("first look moved %v", g.moves)
	}
	now = now.Add(time.Second)
	fakeProc(t, proc, pid, 50*time.Millisecond, time.Second)
	l.Tick(context.Background())
	if g.moves[pid] != Workload {
		t.Fatalf("moves %v, want %d to workload", g.moves, pid)
	}
	b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "oom_score_adj"))
	if err != nil || string(b) != strconv.Itoa(OOMFloor(Workload)) {
		t.Fatalf("oom_score_adj %q (%v), want %d", b, err, OOMFloor(Workload))
	}
}

func TestParseSchedstat(t *testing.T) {
	d, err := parseSchedstat([]byte("1500000 2500000 12\n"))
	if err != nil || d != 4*time.Millisecond {
		t.Fatalf("%v %v", d, err)
	}
	for _, bad := range []string{"", "1", "x 2 3", "1 -2 3"} {
		if _, err := parseSchedstat([]byte(bad)); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}
