package container

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/testutil"

	"github.com/covedev/cove/internal/runtime"
)

// cgroupFile reads file (such as "memory.limit_in_bytes") of cgroup p; on
// cgroup v1 from the hierarchy of controller.
func cgroupFile(t *testing.T, controller, p, file string) string {
	t.Helper()
	dir := filepath.Join("/sys/fs/cgroup", controller, p)
	if cgroups.Mode() == cgroups.Unified {
		dir = filepath.Join("/sys/fs/cgroup", p)
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// procCgroup returns the cgroup of pid in the memory hierarchy (v1) or the
// unified one.
func procCgroup(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		if cgroups.Mode() == cgroups.Unified && f[0] == "0" {
			return f[2]
		}
		if cgroups.Mode() != cgroups.Unified && f[1] == "memory" {
			return f[2]
		}
	}
	t.Fatalf("no cgroup for pid %d in:\n%s", pid, b)
	return ""
}

func TestGroupSharesCgroup(t *testing.T) {
	h := newTestHost(t)
	rt := h.runtime(t)
	const group = "grp"
	res := runtime.Resources{CPUMillis: 1500, MemoryBytes: 256 << 20, Pids: 200}
	a, b := h.spec(t, "grp-a"), h.spec(t, "grp-b")
	a.Group, b.Group = group, group
	a.Resources, b.Resources = res, res
	stA, stB := startSpec(t, rt, a), startSpec(t, rt, b)
	groupCg := "/" + h.cgroupParent + "/" + group

	// The group's cgroup carries the limits, for the group as a whole.
	unified := cgroups.Mode() == cgroups.Unified
	want := map[[2]string]string{
		{"memory", "memory.limit_in_bytes"}: fmt.Sprint(res.MemoryBytes),
		{"pids", "pids.max"}:                fmt.Sprint(res.Pids),
		{"cpu", "cpu.cfs_quota_us"}:         "150000",
	}
	if unified {
		want = map[[2]string]string{
			{"", "memory.max"}: fmt.Sprint(res.MemoryBytes),
			{"", "pids.max"}:   fmt.Sprint(res.Pids),
			{"", "cpu.max"}:    "150000 100000",
		}
	}
	for f, v := range want {
		if got := cgroupFile(t, f[0], groupCg, f[1]); got != v {
			t.Errorf("group %s = %s, want %s", f[1], got, v)
		}
	}

	// Each member's cgroup is below it, without limits of its own.
	total := 0
	for _, m := range []struct {
		id  string
		pid int
	}{{a.ID, stA.Pid}, {b.ID, stB.Pid}} {
		cg := groupCg + "/" + m.id
		if got := procCgroup(t, m.pid); got != cg {
			t.Errorf("PID 1 of %s is in cgroup %s, want %s", m.id, got, cg)
		}
		if got := cgroupFile(t, "pids", cg, "pids.max"); got != "max" {
			t.Errorf("member %s has its own pids limit %s", m.id, got)
		}
		n, err := strconv.Atoi(cgroupFile(t, "pids", cg, "pids.current"))
		if err != nil || n < 1 {
			t.Errorf("member %s: pids.current = %d, %v", m.id, n, err)
		}
		total += n
	}
	// The group counts its members' processes (which come and go).
	if n, err := strconv.Atoi(cgroupFile(t, "pids", groupCg, "pids.current")); err != nil || n < 2 {
		t.Errorf("group pids.current = %d, %v; members have %d", n, err, total)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Deleting one member keeps the group for the other.
	if err := rt.Delete(ctx, a.ID); err != nil {
		t.Fatalf("Delete %s: %v", a.ID, err)
	}
	if dirs := cgroupDirs(t, h.cgroupParent+"/"+group, a.ID); len(dirs) > 0 {
		t.Errorf("cgroups of deleted member left: %v", dirs)
	}
	if dirs := cgroupDirs(t, h.cgroupParent, group); len(dirs) == 0 {
		t.Fatal("group cgroup removed while a member runs")
	}
	if st, err := rt.State(ctx, b.ID); err != nil || st.Status != runtime.StatusRunning || st.Pid != stB.Pid {
		t.Errorf("other member after Delete: %+v, %v", st, err)
	}
	if got := cgroupFile(t, "pids", groupCg, "pids.max"); got != fmt.Sprint(res.Pids) {
		t.Errorf("group pids.max after Delete of a member = %s", got)
	}

	// A member started again joins the existing group.
	stA = startSpec(t, rt, a)
	if got := procCgroup(t, stA.Pid); got != groupCg+"/"+a.ID {
		t.Errorf("restarted member in cgroup %s", got)
	}

	// Deleting the last member removes the group.
	for _, id := range []string{a.ID, b.ID} {
		if err := rt.Delete(ctx, id); err != nil {
			t.Fatalf("Delete %s: %v", id, err)
		}
	}
	if dirs := cgroupDirs(t, h.cgroupParent, group); len(dirs) > 0 {
		t.Errorf("group cgroups left after its last member was deleted: %v", dirs)
	}
}

// TestGroupStaleMemberCgroup checks that a member's cgroup left behind (as
// by a crashed create) is replaced, and that a stopped member is restarted
// in its group.
func TestGroupStaleMemberCgroup(t *testing.T) {
	h := newTestHost(t)
	rt := h.runtime(t)
	spec := h.spec(t, "stale-member")
	spec.Group = "stale-grp"
	spec.Resources = runtime.Resources{Pids: 100}
	stale := filepath.Join("/sys/fs/cgroup/pids", h.cgroupParent, spec.Group, spec.ID)
	if cgroups.Mode() == cgroups.Unified {
		stale = filepath.Join("/sys/fs/cgroup", h.cgroupParent, spec.Group, spec.ID)
	}
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	// A stale limit that the new member must not inherit.
	if err := os.WriteFile(filepath.Join(stale, "pids.max"), []byte("3"), 0); err != nil {
		t.Fatal(err)
	}
	st := startSpec(t, rt, spec)
	cg := "/" + h.cgroupParent + "/" + spec.Group + "/" + spec.ID
	if got := cgroupFile(t, "pids", cg, "pids.max"); got != "max" {
		t.Errorf("member pids.max = %s, want max (stale cgroup kept)", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := rt.Stop(ctx, spec.ID, 0); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx, spec); err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
	st2, err := rt.State(ctx, spec.ID)
	if err != nil || st2.Status != runtime.StatusRunning || st2.Pid == st.Pid {
		t.Fatalf("State after restart = %+v, %v", st2, err)
	}
	if got := procCgroup(t, st2.Pid); got != cg {
		t.Errorf("restarted member in cgroup %s, want %s", got, cg)
	}
	if got := cgroupFile(t, "pids", "/"+h.cgroupParent+"/"+spec.Group, "pids.max"); got != "100" {
		t.Errorf("group pids.max after restart = %s, want 100", got)
	}
}

func TestConsoleLog(t *testing.T) {
	h := newTestHost(t)
	rt := h.runtime(t)
	spec := h.spec(t, "console-log")
	spec.ConsoleLog = filepath.Join(t.TempDir(), "logs", "env", "console-log.log")
	spec.Process.Args = []string{"/bin/sh", "-c", "echo hello out; echo hello err >&2; exec sleep 1000"}
	startSpec(t, rt, spec)

	testutil.WaitNoError(t, "both streams in the console log", func() error {
		b, _ := os.ReadFile(spec.ConsoleLog)
		if got := string(b); !strings.Contains(got, "hello out\n") || !strings.Contains(got, "hello err\n") {
			return fmt.Errorf("console log %s = %q", spec.ConsoleLog, got)
		}
		return nil
	})
	if fi, err := os.Stat(spec.ConsoleLog); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("console log mode: %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Dir(spec.ConsoleLog)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("console log dir mode: %v, %v", fi.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(spec.StateDir, consoleLog)); !os.IsNotExist(err) {
		t.Errorf("console.log written to the state dir too: %v", err)
	}
}

// TestGroupStartFailure checks that a failed start of a group's only member
// leaves no group cgroup, and that the error carries runc's message from the
// configured console log.
func TestGroupStartFailure(t *testing.T) {
	h := newTestHost(t)
	rt := h.runtime(t)
	spec := h.spec(t, "grp-bad")
	spec.Group = "bad-grp"
	spec.Resources = runtime.Resources{Pids: 100}
	spec.ConsoleLog = filepath.Join(t.TempDir(), "console.log")
	spec.Process.Args = []string{"/no/such/agent"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t.Cleanup(func() { _ = rt.Delete(context.Background(), spec.ID) })

	err := rt.Start(ctx, spec)
	if err == nil {
		t.Fatal("Start with a missing executable succeeded")
	}
	if !strings.Contains(err.Error(), "/no/such/agent") {
		t.Errorf("error does not carry runc's message: %v", err)
	}
	if b, _ := os.ReadFile(spec.ConsoleLog); !strings.Contains(string(b), "/no/such/agent") {
		t.Errorf("console log does not hold runc's error: %q", b)
	}
	if dirs := cgroupDirs(t, h.cgroupParent, spec.Group); len(dirs) > 0 {
		t.Errorf("group cgroups left after failed Start: %v", dirs)
	}
}

func TestStartValidatesGroupAndConsoleLog(t *testing.T) {
	rt := &Runtime{cfg: Config{Root: t.TempDir(), CgroupParent: "cove"}}
	base := runtime.Spec{ID: "a", StateDir: "/s", Rootfs: "/r", IDMap: idm(), Process: runtime.Process{Args: []string{"x"}}}
	for name, mod := range map[string]func(*runtime.Spec){
		"dotdot group":         func(s *runtime.Spec) { s.Group = ".." },
		"dot group":            func(s *runtime.Spec) { s.Group = "." },
		"slash group":          func(s *runtime.Spec) { s.Group = "a/b" },
		"dotdot id":            func(s *runtime.Spec) { s.ID = ".." },
		"relative console log": func(s *runtime.Spec) { s.ConsoleLog = "logs/console.log" },
	} {
		spec := base
		mod(&spec)
		if err := rt.Start(context.Background(), spec); err == nil {
			t.Errorf("%s: Start succeeded", name)
		}
	}
}
