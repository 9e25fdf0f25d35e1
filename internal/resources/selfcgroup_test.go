package resources

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/cgroups/v3"
)

// cpuCgroupOf is the cgroup of task (a pid, or pid/task/tid) in the cpu
// hierarchy (v1) or the unified one (v2).
func cpuCgroupOf(t *testing.T, task string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", task, "cgroup"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if cgroups.Mode() == cgroups.Unified && f[0] == "0" {
			return f[2]
		}
		for _, c := range strings.Split(f[1], ",") {
			if c == "cpu" && cgroups.Mode() != cgroups.Unified {
				return f[2]
			}
		}
	}
	t.Fatalf("%s: no cpu cgroup in %q", task, b)
	return ""
}

// cgroupLine is the line of /proc/self/cgroup for controller c.
func cgroupLine(t *testing.T, c string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && f[1] == c {
			return line
		}
	}
	return ""
}

// TestRunnerCgroupChildrenDoNotInherit: the runner moves into its own
// cgroup with a high CPU weight, every thread of it; what it starts with
// StartChild or RunChild — a CPU-heavy git clone, runc, mkfs — is born in
// the cgroup the runner came from, not in the weighted one, while a plain
// cmd.Start would have inherited it (checked too, so the test sees the
// difference). A child moved into a work cgroup (unpack, backup) ends up
// there. Leaving puts the runner back and removes the cgroup. Real
// cgroups, this host's hierarchy.
func TestRunnerCgroupChildrenDoNotInherit(t *testing.T) {
	if cgroups.Mode() == cgroups.Unified {
		t.Skip("v2: StartChild uses CLONE_INTO_CGROUP there (TestRunnerCgroupV2Fake); this host's real hierarchy is what this test needs")
	}
	parent := testParent(t, WorkDir+"/unpack", WorkDir)
	t.Cleanup(func() { _ = os.Remove(filepath.Join(cgroupRoot, "cpu", RunnerCgroupPath(parent))) })
	home := cpuCgroupOf(t, "self")
	memBefore := cgroupLine(t, "memory")
	s, err := EnterRunnerCgroup(parent, 1000)
	if err != nil {
		t.Fatal(err)
	}
	left := false
	t.Cleanup(func() {
		if !left {
			_ = s.Leave(context.Background())
		}
	})
	self := RunnerCgroupPath(parent)
	if got := cpuCgroupOf(t, "self"); got != self {
		t.Fatalf("runner in %s, want %s", got, self)
	}
	if got := readFile(t, filepath.Join(cgroupRoot, "cpu", self, "cpu.shares")); got != "10240" {
		t.Errorf("cpu.shares %s, want 10240 (weight 1000)", got)
	}
	if got := cgroupLine(t, "memory"); got != memBefore {
		t.Errorf("the runner's memory cgroup changed: %q, was %q (only the CPU weight moves on v1)", got, memBefore)
	}
	threadsIn := func(want string) {
		t.Helper()
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			if got := cpuCgroupOf(t, "self/task/"+task.Name()); got != want {
				t.Errorf("thread %s in %s, want %s", task.Name(), got, want)
			}
		}
	}
	threadsIn(self)

	// A child started the usual way inherits the weight: the danger.
	plain := exec.Command("sleep", "60")
	if err := plain.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plain.Process.Kill(); _ = plain.Wait() })
	if got := cpuCgroupOf(t, strconv.Itoa(plain.Process.Pid)); got != self {
		t.Errorf("control: a plain child is in %s, expected it to inherit %s", got, self)
	}
	// StartChild: born at home, with Pdeathsig kept working (the thread
	// that started it lives on).
	child := exec.Command("sleep", "60")
	child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := StartChild(child); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	if got := cpuCgroupOf(t, strconv.Itoa(child.Process.Pid)); got != home {
		t.Errorf("StartChild's child is in %s, want the runner's home %s", got, home)
	}
	// Its grandchildren too (git starts helpers), and RunChild's.
	var out strings.Builder
	run := exec.Command("sh", "-c", "sh -c 'cat /proc/self/cgroup'")
	run.Stdout = &out
	if err := RunChild(run); err != nil {
		t.Fatal(err)
	}
	if want := ":cpu:" + home + "\n"; !strings.Contains(out.String(), want) {
		t.Errorf("RunChild's grandchild: %q, want a line ending %q", out.String(), want)
	}
	threadsIn(self) // the thread that forked went back

	// The unpack and backup children: started, then moved into their
	// work cgroup, where they end up whatever they were born in.
	w, err := CreateWorkCgroup(parent, "unpack", Limits{CPUMillis: 500})
	if err != nil {
		t.Fatal(err)
	}
	for _, start := range []func(*exec.Cmd) error{(*exec.Cmd).Start, StartChild} {
		c := exec.Command("sleep", "60")
		if err := start(c); err != nil {
			t.Fatal(err)
		}
		if err := w.Add(c.Process.Pid); err != nil {
			t.Fatal(err)
		}
		if got := cpuCgroupOf(t, strconv.Itoa(c.Process.Pid)); got != w.Path() {
			t.Errorf("work child in %s, want %s", got, w.Path())
		}
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	if err := w.Remove(context.Background()); err != nil {
		t.Fatal(err)
	}

	_ = plain.Process.Kill()
	_ = plain.Wait() // it was in the runner's cgroup: gone before Leave
	left = true
	if err := s.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := cpuCgroupOf(t, "self"); got != home {
		t.Errorf("after Leave the runner is in %s, want %s", got, home)
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cpu", self)); !os.IsNotExist(err) {
		t.Errorf("the runner's cgroup is still there: %v", err)
	}
	// Without a runner cgroup StartChild is cmd.Start.
	c := exec.Command("true")
	if err := RunChild(c); err != nil {
		t.Fatal(err)
	}
}

// TestRunnerCgroupReusedAfterKill: a runner killed -9 leaves its cgroup
// behind (empty: its children never were in it); the next start reuses it
// and leaving removes it.
func TestRunnerCgroupReusedAfterKill(t *testing.T) {
	if cgroups.Mode() == cgroups.Unified {
		t.Skip("the real v1 hierarchy is what this test needs")
	}
	parent := testParent(t)
	// What a killed runner left: the cgroup, with another weight.
	dir := filepath.Join(cgroupRoot, "cpu", RunnerCgroupPath(parent))
	t.Cleanup(func() { _ = os.Remove(dir) })
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cpu.shares"), []byte("4096"), 0); err != nil {
		t.Fatal(err)
	}
	s, err := EnterRunnerCgroup(parent, 500)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Leave(context.Background()) }()
	if got := readFile(t, filepath.Join(dir, "cpu.shares")); got != "5120" {
		t.Errorf("cpu.shares %s, want 5120", got)
	}
	if got := cpuCgroupOf(t, "self"); got != RunnerCgroupPath(parent) {
		t.Errorf("runner in %s", got)
	}
	if err := s.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("left behind: %v", err)
	}
}

// TestRunnerCgroupV2Fake: on v2 the cgroup is made next to the parent
// (outside the environments' memory cap) with the cpu controller enabled
// on the way down and the weight as asked; the runner's pid goes
// into it; children get CLONE_INTO_CGROUP into the cgroup the runner came
// from, without touching a SysProcAttr the caller may share.
func TestRunnerCgroupV2Fake(t *testing.T) {
	root := fakeV2(t, "/cove/env1")
	home, err := ProcCPUCgroup(os.Getpid(), true)
	if err != nil || home == "" {
		t.Skipf("no v2 line in /proc/self/cgroup (%q, %v)", home, err)
	}
	if err := os.MkdirAll(filepath.Join(root, home), 0o755); err != nil {
		t.Fatal(err)
	}
	pid := os.Getpid() // written to the fake cgroup.procs only
	s, err := enterSelf(root, true, "cove", 1000, pid)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "cove"+RunnerSuffix)
	if RunnerCgroupPath("cove") != "/cove.runner" || RunnerCgroupPath("/a/b/") != "/a/b.runner" {
		t.Errorf("paths %s, %s: want the parent's sibling", RunnerCgroupPath("cove"), RunnerCgroupPath("/a/b/"))
	}
	if got := readFile(t, filepath.Join(dir, "cpu.weight")); got != "1000" {
		t.Errorf("cpu.weight %s", got)
	}
	if got := readFile(t, filepath.Join(dir, "cgroup.procs")); got != fmt.Sprint(pid) {
		t.Errorf("cgroup.procs %s", got)
	}
	if got := readFile(t, filepath.Join(root, "cgroup.subtree_control")); !strings.Contains(got, "cpu") {
		t.Errorf("root: cpu not enabled for children: %q", got)
	}
	if s.Home() != filepath.Join(root, home) {
		t.Errorf("home %s", s.Home())
	}
	shared := &syscall.SysProcAttr{Setsid: true}
	cmd := exec.Command("true")
	cmd.SysProcAttr = shared
	s.intoHome(cmd)
	if a := cmd.SysProcAttr; !a.UseCgroupFD || a.CgroupFD != s.homeFD || !a.Setsid {
		t.Errorf("child attributes %+v", a)
	}
	if shared.UseCgroupFD {
		t.Error("the caller's SysProcAttr was changed")
	}
	// A weight out of range is refused, saying what is allowed.
	if _, err := enterSelf(root, true, "cove", 20000, pid); err == nil || !strings.Contains(err.Error(), "1 to 10000") {
		t.Errorf("weight 20000: %v", err)
	}
	// Leave: the pid goes home; the (fake) kernel files go with rmdir.
	os.Remove(filepath.Join(dir, "cpu.weight"))
	os.Remove(filepath.Join(dir, "cgroup.procs"))
	if err := s.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, home, "cgroup.procs")); got != fmt.Sprint(pid) {
		t.Errorf("home cgroup.procs %s", got)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("left behind: %v", err)
	}
}
