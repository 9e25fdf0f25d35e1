package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/build"
	"github.com/covedev/cove/internal/resources"
)

// pidOf is the pid of the host process whose command line is argv (0:
// none).
func pidOf(argv ...string) int {
	want := []byte(strings.Join(argv, "\x00") + "\x00")
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && bytes.Equal(b, want) {
			return pid
		}
	}
	return 0
}

// cgroupFile is the content of a cgroup's file, in the v1 hierarchy of
// controller or on v2.
func cgroupFile(t *testing.T, controller, p, v1, v2 string) string {
	t.Helper()
	f := filepath.Join("/sys/fs/cgroup", controller, p, v1)
	if cgroups.Mode() == cgroups.Unified {
		f = filepath.Join("/sys/fs/cgroup", p, v2)
	}
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatalf("%s: %v", f, err)
	}
	return strings.TrimSpace(string(b))
}

// TestBuildWorkCgroup: a Dockerfile build runs in the runner's limited
// work cgroup with the --build-* limits, its RUN steps included; the
// environment still starts; once the runner stops, the cgroup is gone.
func TestBuildWorkCgroup(t *testing.T) {
	requireTools(t)
	if _, err := os.Stat(build.DefaultBuildkitd); err != nil {
		t.Skipf("needs buildkitd at %s (scripts/build-buildkit.sh; make test builds it)", build.DefaultBuildkitd)
	}
	c := newClusterWith(t, "--build-insecure-registry", "outside.test:5000", "--dns-upstream", outsideIP+":53",
		"--build-cpus", "1", "--build-memory", fmt.Sprint(3<<30), "--build-pids", "5000")
	u := c.user
	outsideNS(t, c.id)
	marker := fmt.Sprint(3_000_000 + rand.IntN(1_000_000))
	repo := gitRepo(t, filepath.Join(c.dir, "app"), map[string]string{
		".devcontainer/devcontainer.json": `{"build": {"dockerfile": "Dockerfile"}}`,
		// The step waits until the test has seen it and ends it.
		".devcontainer/Dockerfile": "FROM outside.test:5000/test/busybox:latest\nRUN sleep " + marker + " || true\n",
	})
	stop := u.background("env", "create", repo, "--name", "wc", "--wait", "--timeout", "5m")
	defer stop()

	work := resources.WorkCgroupPath(c.cgroup, "build")
	var step int
	waitFor(t, "the build's RUN step", func() bool {
		step = pidOf("sleep", marker)
		return step != 0
	})
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", step))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		limited := f[1] == "" && cgroups.Mode() == cgroups.Unified
		for _, ctrl := range strings.Split(f[1], ",") {
			limited = limited || ctrl == "cpu" || ctrl == "memory" || ctrl == "pids" || ctrl == "blkio"
		}
		if limited && f[2] != work && !strings.HasPrefix(f[2], work+"/") {
			t.Errorf("the RUN step is outside the work cgroup %s: %s", work, line)
		}
	}
	cpu := cgroupFile(t, "cpu", work, "cpu.cfs_quota_us", "cpu.max")
	if cpu != "100000" && cpu != "100000 100000" {
		t.Errorf("the build's CPU quota is %q, want one CPU (--build-cpus 1)", cpu)
	}
	if got := cgroupFile(t, "memory", work, "memory.limit_in_bytes", "memory.max"); got != fmt.Sprint(3<<30) {
		t.Errorf("the build's memory limit is %s, want --build-memory's", got)
	}
	if got := cgroupFile(t, "pids", work, "pids.max", "pids.max"); got != "5000" {
		t.Errorf("the build's pids limit is %s, want 5000", got)
	}
	if err := syscall.Kill(step, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the environment built to run", func() bool {
		return field(u.envJSON("wc"), "status", "phase") == "ENVIRONMENT_PHASE_RUNNING"
	})

	c.up.stop()
	if resources.Exists(work) {
		t.Errorf("the build's work cgroup %s is left after the runner stopped", work)
	}
}
