package resources

import (
	"bufio"
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
	"github.com/covedev/cove/internal/testutil"
)

// inCgroup reports whether process pid is in cgroup p in every hierarchy
// that has a limit controller (v1: cpu, memory, pids, blkio; v2: the one).
func inCgroup(t *testing.T, pid int, p string) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"cpu": true, "memory": true, "pids": true, "blkio": true}
	if cgroups.Mode() == cgroups.Unified {
		want = map[string]bool{"": true}
	}
	found := 0
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, ctrl := range strings.Split(f[1], ",") {
			if want[ctrl] {
				if f[2] != p {
					return false
				}
				found++
				want[ctrl] = false
			}
		}
	}
	return found == len(want)
}

// TestWorkCgroup: the runner's heavy work goes into a cgroup of its own
// below the parent with the limits asked; what the process starts there
// is born there (a build's RUN steps stay limited); removal leaves no
// cgroup behind, not even the work directory.
func TestWorkCgroup(t *testing.T) {
	parent := testParent(t, WorkDir)
	// Made by a runner on this host: IO limited on the disk of the temp dir
	// when it is on one.
	l := Limits{CPUMillis: 500, MemoryBytes: 256 << 20, Pids: 64}
	if maj, min, err := BlockDevice(t.TempDir()); err == nil {
		l.IO = []DeviceIO{{Major: maj, Minor: min, WriteBPS: 10 << 20}}
	}
	w, err := CreateWorkCgroup(parent, "build", l)
	if err != nil {
		t.Fatal(err)
	}
	if w.Path() != parent+"/.work/build" {
		t.Errorf("path %s", w.Path())
	}
	if cgroups.Mode() == cgroups.Unified {
		wantLimits(t, w.Path(), "50000 100000", fmt.Sprint(256<<20), "64")
	} else {
		wantLimits(t, w.Path(), "50000", fmt.Sprint(256<<20), "64")
		if len(l.IO) > 0 {
			f := filepath.Join(cgroupRoot, "blkio", w.Path(), "blkio.throttle.write_bps_device")
			if got := readFile(t, f); got != fmt.Sprintf("%d:%d %d", l.IO[0].Major, l.IO[0].Minor, 10<<20) {
				t.Errorf("%s = %q", f, got)
			}
		}
	}

	// A daemon: a shell that, once placed, starts a child (as buildkitd
	// starts runc for a RUN step) and prints its pid.
	cmd := exec.Command("sh", "-c", `read go; sleep 1000 & echo $!; wait`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	stop := func() {
		if !done {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
			done = true
		}
	}
	t.Cleanup(func() {
		stop()
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer cancel()
		_ = w.Remove(ctx)
	})
	if err := w.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if !inCgroup(t, cmd.Process.Pid, w.Path()) {
		t.Fatalf("the daemon is not in %s:\n%s", w.Path(), readFile(t, fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid)))
	}
	fmt.Fprintln(stdin, "go")
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	if !inCgroup(t, child, w.Path()) {
		t.Errorf("the daemon's child is not in %s:\n%s", w.Path(), readFile(t, fmt.Sprintf("/proc/%d/cgroup", child)))
	}
	procs, err := w.Procs()
	if err != nil || len(procs) != 2 {
		t.Errorf("processes in the work cgroup: %v, %v; want the daemon and its child", procs, err)
	}

	// Idempotent: a restarted runner sets the limits again.
	if _, err := CreateWorkCgroup(parent, "build", Limits{CPUMillis: 1000}); err != nil {
		t.Fatalf("again: %v", err)
	}

	stop()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	if err := w.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if Exists(w.Path()) || Exists(parent+"/"+WorkDir) {
		t.Errorf("cgroups left after Remove: %s or its directory", w.Path())
	}
}

func TestWorkCgroupRefusesNames(t *testing.T) {
	for _, name := range []string{"", "../build", "a/b", "Build", ".work"} {
		if _, err := createWork(t.TempDir(), "cove", name, Limits{}); err == nil {
			t.Errorf("work cgroup %q accepted", name)
		}
	}
	if _, err := createWork(t.TempDir(), "/", "build", Limits{}); err == nil {
		t.Error("work cgroup below the root cgroup accepted")
	}
}

// TestWorkCgroupV2 runs the v2 path on a fake cgroupfs in a directory
// (this host has its controllers on v1): the limits are written, no
// controller is enabled for children (the cgroup holds processes), and a
// process is added through cgroup.procs.
func TestWorkCgroupV2(t *testing.T) {
	const p = "/cove/.work/build"
	root := t.TempDir()
	for d := p; ; d = filepath.Dir(d) {
		dir := filepath.Join(root, d)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, c := range map[string]string{"cgroup.controllers": "cpu io memory pids", "cgroup.subtree_control": "", "cgroup.procs": "", "memory.swap.max": "max"} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if d == "/" {
			break
		}
	}
	w, err := createWork(root, "cove", "build", Limits{CPUMillis: 1000, MemoryBytes: 1 << 30, Pids: 500,
		IO: []DeviceIO{{Major: 8, Minor: 0, WriteBPS: 100 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, p)
	for f, want := range map[string]string{
		"cpu.max":    "100000 100000",
		"memory.max": fmt.Sprint(1 << 30),
		"pids.max":   "500",
		"io.max":     fmt.Sprintf("8:0 rbps=max wbps=%d riops=max wiops=max", 100<<20),
	} {
		if got := readFile(t, filepath.Join(dir, f)); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
	if sc := readFile(t, filepath.Join(dir, "cgroup.subtree_control")); strings.Contains(sc, "+") {
		t.Errorf("controllers enabled for children of a cgroup that holds processes: %q", sc)
	}
	if sc := readFile(t, filepath.Join(root, "/cove/.work", "cgroup.subtree_control")); !strings.Contains(sc, "cpu") || !strings.Contains(sc, "io") {
		t.Errorf("the work directory does not give its children the controllers: %q", sc)
	}
	if err := w.Add(4242); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "cgroup.procs")); got != "4242" {
		t.Errorf("cgroup.procs = %q", got)
	}
}
