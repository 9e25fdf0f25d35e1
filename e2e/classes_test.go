package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/resources"
)

// TestCPUShareByClass: a runner offering several classes (--classes FILE)
// runs an environment of a 1-CPU class and one of a 2-CPU class; both
// saturate every CPU of the host. Their guarantees (scaled to the host
// when they add up to more) become their cgroups' CPU weights, so under
// this contention the 2-CPU environment gets twice the CPU of the other:
// measured from their cgroups' usage over a window of CPU time, not of
// wall time, as the machine is shared.
//
// Tolerance: the ratio must be within a factor of 3/2 of 2 (1.33 to 3).
// CFS splits a group's weight across the CPUs in proportion to where its
// threads run and rebalances them only periodically, and other tests load
// the CPUs unevenly, so the lighter group's threads can sit on the busier
// CPU for a while; the agents and SSH sessions use a little CPU too. On
// this shared 2-CPU host (load average 15-45) the ratio measured 2.01 and
// 2.41 over 20 CPU-seconds with two spinners per CPU, then 1.92 and 1.82
// with this window and spinner count. The failures this test
// is for are well outside: 1 when the weights do not come from the
// classes (an equal split, which a static quota per class also gives), 0.5
// when they are inverted.
func TestCPUShareByClass(t *testing.T) {
	classes := filepath.Join(t.TempDir(), "classes.jsonc")
	if err := os.WriteFile(classes, []byte(`{
  // Two sizes; "default" for anything created without --class.
  "classes": [
    {"id": "default", "cpus": 1, "memory": "1GiB"},
    {"id": "one", "displayName": "One CPU", "cpus": 1, "memory": "1GiB"},
    {"id": "two", "displayName": "Two CPUs", "cpus": 2, "memory": "1GiB", "ioWriteBps": 0},
  ],
}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newClusterWith(t, "--classes", classes)
	u := c.user
	cpuFiles, err := resources.HostCPUFiles()
	if err != nil {
		t.Skipf("no CPU controller: %v", err)
	}

	// The server shows what the runner offers, each class with its limits.
	out := u.must("runner", "classes")
	for _, want := range []string{"one ", "two ", "default "} {
		if !strings.Contains(out, want) {
			t.Fatalf("cove runner classes lacks %q:\n%s", want, out)
		}
	}

	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "sharerepo"), map[string]string{
		".devcontainer/devcontainer.json": `{"image": "` + reg + `/test/busybox:latest"}`,
	})
	u.must("env", "create", repo, "--name", "one", "--class", "one", "--wait", "--timeout", "3m")
	u.must("env", "create", repo, "--name", "two", "--class", "two", "--wait", "--timeout", "3m")
	ids := map[string]string{"one": field(u.envJSON("one"), "id"), "two": field(u.envJSON("two"), "id")}
	usage := func(name string) time.Duration {
		t.Helper()
		st, err := cpuFiles.Read(resources.CgroupPath(c.cgroup, ids[name]))
		if err != nil {
			t.Fatal(err)
		}
		return st.Usage
	}

	// Each saturates the host: four times as many spinners as CPUs, so
	// that each CPU has threads of both.
	n := 4 * goruntime.NumCPU()
	var list []string
	for i := range n {
		list = append(list, fmt.Sprint(i))
	}
	spin := `for i in ` + strings.Join(list, " ") + `; do (while [ ! -e /tmp/stop ]; do :; done) & done; wait`
	for _, name := range []string{"one", "two"} {
		stop := u.background("ssh", name, "--", spin)
		defer stop()
		defer u.run("ssh", name, "--", "touch /tmp/stop")
	}
	// Warm up: both busy (a CPU-second each), and the control loop has
	// seen them so.
	start := map[string]time.Duration{"one": usage("one"), "two": usage("two")}
	waitFor(t, "both environments to be busy", func() bool {
		return usage("one")-start["one"] > time.Second && usage("two")-start["two"] > time.Second
	})
	// The loop's quota is on each environment's workload group (where
	// the spinners are), the environment's cgroup keeping more for its
	// agent and terminals: the split below is made with the quota there.
	for name, id := range ids {
		env := resources.CgroupPath(c.cgroup, id)
		var eq, wq int64
		waitFor(t, name+"'s quota on its workload group", func() bool {
			eq, wq = cfsQuota(t, env), cfsQuota(t, env+"/workload")
			return wq > 0 && eq > wq
		})
		t.Logf("%s: environment's quota %d µs, workload's %d µs per 100 ms", name, eq, wq)
	}

	// The window: until the two have used 20 CPU-seconds per host CPU
	// together (20 s of wall time on an otherwise idle host).
	window := time.Duration(20*goruntime.NumCPU()) * time.Second
	u0, u2 := usage("one"), usage("two")
	var d1, d2 time.Duration
	waitFor(t, fmt.Sprintf("the pair to use %s of CPU", window), func() bool {
		d1, d2 = usage("one")-u0, usage("two")-u2
		return d1+d2 >= window
	})
	ratio := float64(d2) / float64(d1)
	t.Logf("over %s of CPU: class one used %s, class two %s: ratio %.2f (want 2)", d1+d2, d1.Round(time.Millisecond), d2.Round(time.Millisecond), ratio)
	if ratio < 4.0/3 || ratio > 3 {
		t.Errorf("CPU split %.2f between the 2-CPU and the 1-CPU class, want 2 within a factor of 3/2 (1.33 to 3)", ratio)
	}
}

// cfsQuota is cgroup p's CFS quota in µs per 100 ms period (-1: none).
func cfsQuota(t *testing.T, p string) int64 {
	t.Helper()
	name := filepath.Join("/sys/fs/cgroup/cpu", p, "cpu.cfs_quota_us")
	if cgroups.Mode() == cgroups.Unified {
		name = filepath.Join("/sys/fs/cgroup", p, "cpu.max")
	}
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
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
