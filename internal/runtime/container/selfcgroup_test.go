package container

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/resources"
)

// cpuCgroup is process pid's cgroup in the cpu hierarchy (v1).
func cpuCgroup(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			if c == "cpu" {
				return f[2]
			}
		}
	}
	t.Fatalf("process %d: no cpu cgroup in %q", pid, b)
	return ""
}

// TestContainersOutsideRunnerCgroup: with the runner in its own weighted
// cgroup (resources.EnterRunnerCgroup, as `cove runner` does at start), a
// container started through runc is in its environment's cgroup, never in
// the runner's — the weight is the runner's alone — and the runner's
// cgroup is not below the parent, which goes whole once the container is
// gone.
func TestContainersOutsideRunnerCgroup(t *testing.T) {
	if cgroups.Mode() == cgroups.Unified {
		t.Skip("this test reads the v1 cpu hierarchy (v2: resources' TestRunnerCgroupV2Fake)")
	}
	h := newTestHost(t)
	rt := h.runtime(t)
	self, err := resources.EnterRunnerCgroup(h.cgroupParent, 1000)
	if err != nil {
		t.Fatal(err)
	}
	left := false
	t.Cleanup(func() {
		if !left {
			_ = self.Leave(context.Background())
		}
	})
	runnerCg := resources.RunnerCgroupPath(h.cgroupParent)
	if got := cpuCgroup(t, os.Getpid()); got != runnerCg {
		t.Fatalf("runner in %s, want %s", got, runnerCg)
	}
	spec := h.spec(t, "weighted")
	st := startSpec(t, rt, spec)
	want := path.Join("/", h.cgroupParent, spec.ID)
	if got := cpuCgroup(t, st.Pid); got != want && !strings.HasPrefix(got, want+"/") {
		t.Errorf("container init in %s, want %s (not the runner's %s)", got, want, runnerCg)
	}
	// The runner's cgroup is none of the parent's: with the container
	// gone, the parent goes even while the runner is in its own.
	for _, d := range parentDirs(t, h.cgroupParent) {
		if _, err := os.Stat(filepath.Join(d, path.Base(runnerCg))); err == nil {
			t.Errorf("runner cgroup below the parent: %s", d)
		}
	}
	left = true
	if err := self.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rt.Delete(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if removed, err := rt.RemoveCgroupParent(); err != nil || !removed {
		t.Fatalf("runner left and no container: removed %v, %v", removed, err)
	}
	if dirs := parentDirs(t, h.cgroupParent); len(dirs) > 0 {
		t.Errorf("left behind: %v", dirs)
	}
}
