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

	"github.com/covedev/cove/internal/runtime"
)

// hostProcs returns the pids of processes running as host uid (zombies are
// reported separately) and the zombie children of this process.
func hostProcs(t *testing.T, uid uint32) (running, zombies []int, ourZombies []int) {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, ppid, ok := procState(pid)
		if !ok {
			continue
		}
		if state == 'Z' && ppid == os.Getpid() {
			ourZombies = append(ourZombies, pid)
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "Uid:"); ok {
				if f := strings.Fields(v); len(f) > 0 && f[0] == fmt.Sprint(uid) {
					if state == 'Z' {
						zombies = append(zombies, pid)
					} else {
						running = append(running, pid)
					}
				}
			}
		}
	}
	return running, zombies, ourZombies
}

// cgroupDirs returns the environment's cgroup directories that exist in any
// mounted hierarchy.
func cgroupDirs(t *testing.T, parent, id string) []string {
	t.Helper()
	found, err := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parent, id))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", parent, id)); err == nil {
		found = append(found, filepath.Join("/sys/fs/cgroup", parent, id))
	}
	return found
}

func TestStopAndDeleteLeaveNothing(t *testing.T) {
	h := newTestHost(t)
	rt := h.runtime(t)
	spec := h.spec(t, "leaves-nothing")
	// Children of PID 1 too, to check the whole tree goes.
	spec.Process.Args = []string{"/bin/sh", "-c", "sleep 1000 & sleep 1000 & exec sleep 1000"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := startSpec(t, rt, spec)
	dirs := cgroupDirs(t, h.cgroupParent, spec.ID)
	if len(dirs) == 0 {
		t.Fatal("no cgroup directories for a running container")
	}
	t.Logf("cgroups: %v", dirs)
	if running, _, _ := hostProcs(t, spec.IDMap.HostID); len(running) == 0 {
		t.Fatal("no processes with the environment's host uid")
	}

	// PID 1 (sleep) has no SIGTERM handler, so Stop must kill it.
	if err := rt.Stop(ctx, spec.ID, 200*time.Millisecond); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, _, ok := procState(st.Pid); ok {
		t.Errorf("init %d still in /proc after Stop (not reaped)", st.Pid)
	}
	running, zombies, ours := hostProcs(t, spec.IDMap.HostID)
	if len(running)+len(zombies)+len(ours) > 0 {
		t.Errorf("after Stop: running %v, zombies %v, our zombies %v", running, zombies, ours)
	}

	if err := rt.Delete(ctx, spec.ID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if dirs := cgroupDirs(t, h.cgroupParent, spec.ID); len(dirs) > 0 {
		t.Errorf("cgroups left after Delete: %v", dirs)
	}
	if _, err := os.Stat(filepath.Join(h.root, spec.ID)); !os.IsNotExist(err) {
		t.Errorf("runc state left after Delete: %v", err)
	}
	for _, p := range []string{bundleDir, pidFileName} {
		if _, err := os.Stat(filepath.Join(spec.StateDir, p)); !os.IsNotExist(err) {
			t.Errorf("%s left in the state dir after Delete: %v", p, err)
		}
	}
	running, zombies, ours = hostProcs(t, spec.IDMap.HostID)
	if len(running)+len(zombies)+len(ours) > 0 {
		t.Errorf("after Delete: running %v, zombies %v, our zombies %v", running, zombies, ours)
	}
}

func TestDeleteRunning(t *testing.T) {
	h := newTestHost(t)
	rt := h.runtime(t)
	spec := h.spec(t, "delete-running")
	st := startSpec(t, rt, spec)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := rt.Delete(ctx, spec.ID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, _, ok := procState(st.Pid); ok {
		t.Errorf("init %d still in /proc after Delete", st.Pid)
	}
	if dirs := cgroupDirs(t, h.cgroupParent, spec.ID); len(dirs) > 0 {
		t.Errorf("cgroups left after Delete: %v", dirs)
	}
	if running, zombies, ours := hostProcs(t, spec.IDMap.HostID); len(running)+len(zombies)+len(ours) > 0 {
		t.Errorf("after Delete: running %v, zombies %v, our zombies %v", running, zombies, ours)
	}
}

func TestStartFailureCleansUp(t *testing.T) {
	h := newTestHost(t)
	rt := h.runtime(t)
	spec := h.spec(t, "bad-args")
	spec.Process.Args = []string{"/no/such/agent"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t.Cleanup(func() { _ = rt.Delete(context.Background(), spec.ID) })

	err := rt.Start(ctx, spec)
	if err == nil {
		t.Fatal("Start with a missing executable succeeded")
	}
	t.Logf("Start error: %v", err)
	if !strings.Contains(err.Error(), "/no/such/agent") {
		t.Errorf("error does not carry runc's message: %v", err)
	}
	st, err := rt.State(ctx, spec.ID)
	if err != nil || st.Status != runtime.StatusAbsent {
		t.Errorf("State after failed Start = %+v, %v; want absent", st, err)
	}
	if dirs := cgroupDirs(t, h.cgroupParent, spec.ID); len(dirs) > 0 {
		t.Errorf("cgroups left after failed Start: %v", dirs)
	}
	if running, _, ours := hostProcs(t, spec.IDMap.HostID); len(running)+len(ours) > 0 {
		t.Errorf("processes left after failed Start: %v, zombies %v", running, ours)
	}
}

func TestStartValidates(t *testing.T) {
	rt := &Runtime{cfg: Config{Root: t.TempDir(), CgroupParent: "cove"}}
	for name, spec := range map[string]runtime.Spec{
		"bad id":       {ID: "a/b", StateDir: "/s", Rootfs: "/r", IDMap: idm(), Process: runtime.Process{Args: []string{"x"}}},
		"relative dir": {ID: "a", StateDir: "s", Rootfs: "/r", IDMap: idm(), Process: runtime.Process{Args: []string{"x"}}},
		"no idmap":     {ID: "a", StateDir: "/s", Rootfs: "/r", Process: runtime.Process{Args: []string{"x"}}},
		"no args":      {ID: "a", StateDir: "/s", Rootfs: "/r", IDMap: idm()},
	} {
		if err := rt.Start(context.Background(), spec); err == nil {
			t.Errorf("%s: Start succeeded", name)
		}
	}
}
