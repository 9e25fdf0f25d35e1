package resources

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func cpuWriteFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func cpuReadFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// A fake cgroup v2 hierarchy: an environment's cgroup with a member
// container below it (a Compose environment), as the kernel shows them.
func cpuFakeV2(t *testing.T) string {
	root := t.TempDir()
	env := filepath.Join(root, "cove", "env1")
	cpuWriteFiles(t, env, map[string]string{
		"cpu.stat":   "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 40\nnr_throttled 7\nthrottled_usec 350000\nnr_bursts 0\nburst_usec 0\n",
		"cpu.max":    "100000 100000\n",
		"cpu.weight": "100\n",
	})
	cpuWriteFiles(t, filepath.Join(env, "env1-db"), map[string]string{"cpu.max": "100000 100000\n", "cpu.weight": "100\n",
		"cpu.stat": "usage_usec 1000000\nnr_throttled 3\nthrottled_usec 150000\n"})
	cpuWriteFiles(t, filepath.Join(env, "env1-web"), map[string]string{"cpu.max": "max 100000\n", "cpu.weight": "100\n"})
	return root
}

func TestCPUFilesV2(t *testing.T) {
	root := cpuFakeV2(t)
	c := CPUFilesV2(root)
	p := CgroupPath("cove", "env1")
	st, err := c.Read(p)
	if err != nil {
		t.Fatal(err)
	}
	// Its own throttling and its limited member's.
	want := CPUStat{Usage: 2500 * time.Millisecond, NrThrottled: 7 + 3, Throttled: 500 * time.Millisecond}
	if st != want {
		t.Errorf("Read = %+v, want %+v", st, want)
	}
	if err := c.Set(p, CPULimits{QuotaMillis: 2500, WeightMillis: 1000}); err != nil {
		t.Fatal(err)
	}
	env := filepath.Join(root, p)
	if got := cpuReadFile(t, filepath.Join(env, "cpu.max")); got != "250000 100000" {
		t.Errorf("cpu.max = %q", got)
	}
	if got := cpuReadFile(t, filepath.Join(env, "cpu.weight")); got != "100" { // 1 CPU: 1024 shares, the default weight
		t.Errorf("cpu.weight = %q", got)
	}
	// The member with a quota of its own follows; the unlimited one stays
	// unlimited; members' weights are theirs.
	if got := cpuReadFile(t, filepath.Join(env, "env1-db", "cpu.max")); got != "250000 100000" {
		t.Errorf("member cpu.max = %q", got)
	}
	if got := cpuReadFile(t, filepath.Join(env, "env1-web", "cpu.max")); got != "max 100000" {
		t.Errorf("unlimited member cpu.max = %q", got)
	}
	// Half a CPU weighs less than the default.
	if err := c.Set(p, CPULimits{QuotaMillis: 500, WeightMillis: 500}); err != nil {
		t.Fatal(err)
	}
	if got := cpuReadFile(t, filepath.Join(env, "cpu.weight")); got == "100" || got == "" {
		t.Errorf("cpu.weight for half a CPU = %q", got)
	}
	if got := cpuReadFile(t, filepath.Join(env, "cpu.max")); got != "50000 100000" {
		t.Errorf("cpu.max = %q", got)
	}
	// Unlimited.
	if err := c.Set(p, CPULimits{}); err != nil {
		t.Fatal(err)
	}
	if got := cpuReadFile(t, filepath.Join(env, "cpu.max")); got != "max 100000" {
		t.Errorf("unlimited cpu.max = %q", got)
	}
}

func TestCPUFilesV2BadStat(t *testing.T) {
	root := t.TempDir()
	cpuWriteFiles(t, filepath.Join(root, "a"), map[string]string{"cpu.stat": "usage_usec lots\n"})
	cpuWriteFiles(t, filepath.Join(root, "b"), map[string]string{"cpu.stat": "nr_periods 1\n"})
	c := CPUFilesV2(root)
	for _, p := range []string{"/a", "/b"} {
		if _, err := c.Read(p); err == nil {
			t.Errorf("Read(%s) of a malformed cpu.stat succeeded", p)
		}
	}
}

// A fake cgroup v1 layout with cpu and cpuacct as separate hierarchies,
// as on this project's test host.
func cpuFakeV1(t *testing.T) string {
	root := t.TempDir()
	p := filepath.Join("cove", "env1")
	cpuWriteFiles(t, filepath.Join(root, "cpuacct", p), map[string]string{
		"cpuacct.usage":        "2500000000\n",
		"cpuacct.usage_percpu": "1500000000 1000000000\n",
		"cpuacct.stat":         "user 200\nsystem 50\n",
	})
	cpuWriteFiles(t, filepath.Join(root, "cpu", p), map[string]string{
		"cpu.stat":         "nr_periods 40\nnr_throttled 7\nthrottled_time 350000000\n",
		"cpu.cfs_quota_us": "100000\n", "cpu.cfs_period_us": "100000\n", "cpu.shares": "1024\n",
	})
	cpuWriteFiles(t, filepath.Join(root, "cpu", p, "env1-db"), map[string]string{
		"cpu.stat":         "nr_periods 20\nnr_throttled 3\nthrottled_time 150000000\n",
		"cpu.cfs_quota_us": "100000\n", "cpu.cfs_period_us": "100000\n", "cpu.shares": "1024\n",
	})
	return root
}

func TestCPUFilesV1(t *testing.T) {
	root := cpuFakeV1(t)
	c := CPUFilesV1(root)
	p := CgroupPath("cove", "env1")
	st, err := c.Read(p)
	if err != nil {
		t.Fatal(err)
	}
	// Its own throttling and its limited member's.
	want := CPUStat{Usage: 2500 * time.Millisecond, NrThrottled: 7 + 3, Throttled: 500 * time.Millisecond}
	if st != want {
		t.Errorf("Read = %+v, want %+v", st, want)
	}
	if err := c.Set(p, CPULimits{QuotaMillis: 1500, WeightMillis: 500}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "cpu", p)
	for name, want := range map[string]string{
		"cpu.cfs_quota_us": "150000", "cpu.shares": "512", "env1-db/cpu.cfs_quota_us": "150000", "env1-db/cpu.shares": "1024",
	} {
		if got := cpuReadFile(t, filepath.Join(dir, name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

// TestCPUFilesGone: an environment stopped between the listing and the
// tick: its cgroup is not brought back, and the error says it is gone.
func TestCPUFilesGone(t *testing.T) {
	for name, c := range map[string]*CPUFiles{"v1": CPUFilesV1(cpuFakeV1(t)), "v2": CPUFilesV2(cpuFakeV2(t))} {
		p := CgroupPath("cove", "gone")
		if _, err := c.Read(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: Read of a missing cgroup: %v", name, err)
		}
		if err := c.Set(p, CPULimits{QuotaMillis: 1000, WeightMillis: 1000}); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: Set of a missing cgroup: %v", name, err)
		}
		if _, err := os.Stat(c.cpuDir(p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: Set made the missing cgroup %s", name, c.cpuDir(p))
		}
	}
}

// TestCPUFilesWorkloadSplit: with a workload group, the environment's
// cgroup and its dev container get the quota, the workload group and the
// Compose services the workload's quota, on v1 and v2 (fake hierarchies).
// Before the group exists everything gets the workload's quota and Set
// says the group is missing.
func TestCPUFilesWorkloadSplit(t *testing.T) {
	quotaOf := func(t *testing.T, v2 bool, dir string) string {
		t.Helper()
		if v2 {
			return cpuReadFile(t, filepath.Join(dir, "cpu.max"))
		}
		return cpuReadFile(t, filepath.Join(dir, "cpu.cfs_quota_us"))
	}
	for _, v2 := range []bool{false, true} {
		var root, base string
		var c *CPUFiles
		group := map[string]string{"cpu.max": "max 100000\n", "cpu.weight": "100\n"}
		if v2 {
			root = cpuFakeV2(t)
			c, base = CPUFilesV2(root), root
		} else {
			root = cpuFakeV1(t)
			c, base = CPUFilesV1(root), filepath.Join(root, "cpu")
			group = map[string]string{"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n", "cpu.shares": "1024\n"}
		}
		p := CgroupPath("cove", "env1")
		env := filepath.Join(base, p)
		l := CPULimits{QuotaMillis: 1200, WeightMillis: 1000, Workload: "workload", WorkloadQuotaMillis: 1000}
		err := c.Set(p, l)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "workload") {
			t.Errorf("v2 %v: Set before the group exists: %v", v2, err)
		}
		for _, d := range []string{env, filepath.Join(env, "env1-db")} {
			if got, want := quotaOf(t, v2, d), map[bool]string{false: "100000", true: "100000 100000"}[v2]; got != want {
				t.Errorf("v2 %v: %s before the group exists: %q, want %q", v2, d, got, want)
			}
		}
		// A Compose environment: its dev container env1 (limited, as
		// runc made it) holds the groups.
		dev := filepath.Join(env, "env1")
		devFiles := map[string]string{"cpu.max": "100000 100000\n", "cpu.weight": "100\n"}
		if !v2 {
			devFiles = map[string]string{"cpu.cfs_quota_us": "100000\n", "cpu.cfs_period_us": "100000\n", "cpu.shares": "1024\n"}
		}
		cpuWriteFiles(t, dev, devFiles)
		for _, g := range []string{"agent", "interactive", "workload"} {
			cpuWriteFiles(t, filepath.Join(dev, g), group)
		}
		if err := c.Set(p, l); err != nil {
			t.Fatalf("v2 %v: %v", v2, err)
		}
		want := map[string]string{"": "120000", "env1": "120000", "env1-db": "100000", "env1/workload": "100000",
			"env1/agent": "-1", "env1/interactive": "-1"}
		if v2 {
			want = map[string]string{"": "120000 100000", "env1": "120000 100000", "env1-db": "100000 100000",
				"env1/workload": "100000 100000", "env1/agent": "max 100000", "env1/interactive": "max 100000"}
		}
		for rel, w := range want {
			if got := quotaOf(t, v2, filepath.Join(env, rel)); got != w {
				t.Errorf("v2 %v: %q: %q, want %q", v2, rel, got, w)
			}
		}
		// The throttling of the workload group counts as the
		// environment's.
		stat := "usage_usec 10\nnr_throttled 5\nthrottled_usec 1000\n"
		if !v2 {
			stat = "nr_periods 9\nnr_throttled 5\nthrottled_time 1000000\n"
		}
		cpuWriteFiles(t, filepath.Join(dev, "workload"), map[string]string{"cpu.stat": stat})
		if !v2 {
			cpuWriteFiles(t, dev, map[string]string{"cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n"})
		} else {
			cpuWriteFiles(t, dev, map[string]string{"cpu.stat": "usage_usec 10\nnr_throttled 0\nthrottled_usec 0\n"})
		}
		st, err := c.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.NrThrottled != 7+3+5 {
			t.Errorf("v2 %v: throttled %d, want the environment's 7, the service's 3 and the workload's 5", v2, st.NrThrottled)
		}
	}
}
