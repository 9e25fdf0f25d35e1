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
