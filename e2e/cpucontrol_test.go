package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
)

// envQuota reads the CFS quota (µs per 100 ms; -1 unlimited) of the
// environment's cgroup.
func envQuota(t *testing.T, parent, envID string) int64 {
	t.Helper()
	name := filepath.Join("/sys/fs/cgroup/cpu", parent, envID, "cpu.cfs_quota_us")
	if cgroups.Mode() == cgroups.Unified {
		name = filepath.Join("/sys/fs/cgroup", parent, envID, "cpu.max")
	}
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("environment's quota: %v", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 || f[0] == "max" {
		return -1
	}
	q, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestCPUControl: an environment whose build wants more than its class's
// CPU gets the host's idle CPU from the runner's control loop, and gives
// it back when the build ends; the cgroup's quota shows it.
func TestCPUControl(t *testing.T) {
	c := newClusterWith(t, "--class-cpus", "1")
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "cpurepo"), map[string]string{
		".devcontainer/devcontainer.json": `{"image": "` + reg + `/test/busybox:latest"}`,
	})
	u.must("env", "create", repo, "--name", "cpu", "--wait", "--timeout", "3m")
	envID := field(u.envJSON("cpu"), "id")
	const class = 100_000 // one CPU: 100 ms per 100 ms
	// With process groups the loop's quota is on the workload group (the
	// environment's cgroup keeps it plus a reserve for its agent and
	// terminals, so it is above the class's even at rest once the groups
	// are made); before they are, on the environment's cgroup.
	loopQuota := func() int64 {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/cpu", c.cgroup, envID, "workload")); err == nil {
			return cfsQuota(t, filepath.Join(c.cgroup, envID, "workload"))
		}
		return envQuota(t, c.cgroup, envID)
	}
	waitFor(t, "the loop to hold the idle environment at its class's quota", func() bool {
		return loopQuota() == class
	})
	if c.up.count("CPU control loop on") == 0 {
		t.Fatalf("the runner did not start its CPU control loop:\n%s", c.up.logTail())
	}

	// A build on two CPUs: two spinners until /tmp/stop exists.
	stop := u.background("ssh", "cpu", "--", `for i in 1 2; do (while [ ! -e /tmp/stop ]; do :; done) & done; wait`)
	defer stop()
	waitFor(t, "the loop to give the busy environment more than its class's CPU", func() bool {
		return loopQuota() > class
	})
	t.Logf("quota while busy: %d µs per 100 ms (environment's cgroup %d)", loopQuota(), envQuota(t, c.cgroup, envID))

	u.must("ssh", "cpu", "--", "touch /tmp/stop")
	waitFor(t, "the loop to take the burst back once the build ended", func() bool {
		return loopQuota() == class
	})
}
