package resources

import (
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
)

// writeFiles writes name → content below dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUsageV1FakeCgroupfs(t *testing.T) {
	root := t.TempDir()
	env := "cove/env1"
	writeFiles(t, root, map[string]string{
		"cpuacct/" + env + "/cpuacct.usage":        "2500000000\n",
		"cpu/" + env + "/cpu.stat":                 "nr_periods 10\nnr_throttled 3\nthrottled_time 1200000000\n",
		"cpu/" + env + "/cpu.cfs_quota_us":         "200000\n",
		"cpu/" + env + "/cpu.cfs_period_us":        "100000\n",
		"memory/" + env + "/memory.usage_in_bytes": "500000000\n",
		"memory/" + env + "/memory.stat":           "cache 300000000\ntotal_inactive_file 100000000\n",
		"memory/" + env + "/memory.limit_in_bytes": "4294967296\n",
		"memory/" + env + "/memory.oom_control":    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
		"blkio/" + env + "/blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\n" +
			"259:0 Read 1000\n259:0 Write 24\n259:0 Total 1024\nTotal 13312\n",
		"pids/" + env + "/pids.current": "7\n",
		"pids/" + env + "/pids.max":     "max\n",
	})
	c, err := newUsageReaderAt(root, "cove", false).Read("env1")
	if err != nil {
		t.Fatal(err)
	}
	want := Counters{CPU: 2500 * time.Millisecond, Throttled: 1200 * time.Millisecond, CPULimit: 2,
		Memory: 400000000, MemoryLimit: 4294967296, IORead: 5096, IOWrite: 8216, Pids: 7, PidsLimit: 0, OOMKills: 2}
	if c != want {
		t.Errorf("Read = %+v\nwant   %+v", c, want)
	}
}

func TestUsageV1UnlimitedAndMissingControllers(t *testing.T) {
	root := t.TempDir()
	env := "cove/env1"
	// Only cpuacct and memory (a host without the pids and blkio
	// controllers, a kernel without oom_kill): the rest reads as zero.
	writeFiles(t, root, map[string]string{
		"cpuacct/" + env + "/cpuacct.usage":        "1\n",
		"cpu/" + env + "/cpu.cfs_quota_us":         "-1\n",
		"cpu/" + env + "/cpu.cfs_period_us":        "100000\n",
		"memory/" + env + "/memory.usage_in_bytes": "4096\n",
		"memory/" + env + "/memory.limit_in_bytes": "9223372036854771712\n",
		"memory/" + env + "/memory.oom_control":    "oom_kill_disable 0\nunder_oom 0\n",
	})
	c, err := newUsageReaderAt(root, "cove", false).Read("env1")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Counters{CPU: 1, Memory: 4096}); c != want {
		t.Errorf("Read = %+v, want %+v", c, want)
	}
}

func TestUsageV2FakeCgroupfs(t *testing.T) {
	root := t.TempDir()
	env := "cove/env1"
	writeFiles(t, root, map[string]string{
		env + "/cpu.stat":       "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\nnr_periods 5\nnr_throttled 2\nthrottled_usec 450000\n",
		env + "/cpu.max":        "150000 100000\n",
		env + "/memory.current": "800000000\n",
		env + "/memory.stat":    "anon 500000000\nfile 300000000\ninactive_file 200000000\n",
		env + "/memory.max":     "max\n",
		env + "/memory.events":  "low 0\nhigh 4\nmax 1\noom 1\noom_kill 1\noom_group_kill 0\n",
		env + "/io.stat":        "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n",
		env + "/pids.current":   "12\n",
		env + "/pids.max":       "512\n",
	})
	c, err := newUsageReaderAt(root, "cove", true).Read("env1")
	if err != nil {
		t.Fatal(err)
	}
	want := Counters{CPU: 3 * time.Second, Throttled: 450 * time.Millisecond, CPULimit: 1.5,
		Memory: 600000000, MemoryLimit: 0, IORead: 101, IOWrite: 202, Pids: 12, PidsLimit: 512, OOMKills: 1}
	if c != want {
		t.Errorf("Read = %+v\nwant   %+v", c, want)
	}
	writeFiles(t, root, map[string]string{env + "/cpu.max": "max 100000\n", env + "/memory.max": "1073741824\n"})
	c, err = newUsageReaderAt(root, "cove", true).Read("env1")
	if err != nil {
		t.Fatal(err)
	}
	if c.CPULimit != 0 || c.MemoryLimit != 1<<30 {
		t.Errorf("after limits changed: CPULimit %v MemoryLimit %d, want 0 and 1 GiB", c.CPULimit, c.MemoryLimit)
	}
}

func TestUsageNoCgroup(t *testing.T) {
	root := t.TempDir()
	for _, v2 := range []bool{false, true} {
		_, err := newUsageReaderAt(root, "cove", v2).Read("gone")
		if !errors.Is(err, ErrNoCgroup) {
			t.Errorf("v2=%v: Read of a missing cgroup: %v, want ErrNoCgroup", v2, err)
		}
	}
}

// An environment id names one directory below the parent: never another
// cgroup (a neighbour's, the parent's, the host's).
func TestUsageRefusesIDsThatLeaveTheParent(t *testing.T) {
	root := t.TempDir()
	// The parent's own counters and a neighbour's are there to be leaked.
	writeFiles(t, root, map[string]string{
		"cove/cpu.stat":       "usage_usec 99\n",
		"cove/other/cpu.stat": "usage_usec 99\n",
		"cpu.stat":            "usage_usec 99\n",
	})
	u := newUsageReaderAt(root, "cove", true)
	for _, id := range []string{"", ".", "..", "../cove", "x/../other", "a/b", "/", "x\x00"} {
		c, err := u.Read(id)
		if err == nil || c != (Counters{}) {
			t.Errorf("Read(%q) = %+v, %v; want an error and nothing read", id, c, err)
		}
		if err != nil && !strings.Contains(err.Error(), "invalid environment id") && !errors.Is(err, ErrNoCgroup) {
			t.Errorf("Read(%q): unclear error %v", id, err)
		}
	}
}

// A cgroup file larger than any real one (an io.stat with a line per
// device, or something else mounted there) is read up to a bound, not
// into memory whole.
func TestUsageBoundedRead(t *testing.T) {
	root := t.TempDir()
	env := "cove/env1"
	line := "8:0 rbytes=1 wbytes=1 rios=1 wios=1 dbytes=0 dios=0\n"
	big := strings.Repeat(line, 4*maxStatFile/len(line))
	writeFiles(t, root, map[string]string{env + "/cpu.stat": "usage_usec 1\n", env + "/io.stat": big})
	c, err := newUsageReaderAt(root, "cove", true).Read("env1")
	if err != nil {
		t.Fatal(err)
	}
	if all := uint64(strings.Count(big, "\n")); c.IORead == 0 || c.IORead >= all {
		t.Errorf("IORead = %d of %d lines: want a bounded, non-zero sum", c.IORead, all)
	}
}

// TestUsageRealCgroup reads a real cgroup (root; v1 on this host, v2
// where mounted) with a busy process and limits in it.
func TestUsageRealCgroup(t *testing.T) {
	p, add := newCgroup(t)
	if err := Create(p, Limits{CPUMillis: 500, MemoryBytes: 256 << 20, Pids: 64}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	add(cmd.Process.Pid)

	u := NewUsageReader(path.Dir(p))
	id := path.Base(p)
	var c Counters
	testutil.WaitNoError(t, "CPU time counted in the cgroup", func() error {
		var err error
		c, err = u.Read(id)
		if err == nil && c.CPU == 0 {
			err = errors.New("no CPU time yet")
		}
		return err
	})
	if c.CPULimit != 0.5 || c.MemoryLimit != 256<<20 || c.PidsLimit != 64 {
		t.Errorf("limits read back as cpu %v, memory %d, pids %d; want 0.5, 256 MiB, 64", c.CPULimit, c.MemoryLimit, c.PidsLimit)
	}
	// Memory is not checked: a process's pages stay charged to the cgroup
	// it allocated them in (v1 moves no charges by default).
	if c.Pids < 1 {
		t.Errorf("pids %d: want the busy process counted", c.Pids)
	}
	if _, err := u.Read("no-such-env"); !errors.Is(err, ErrNoCgroup) {
		t.Errorf("Read of a missing environment: %v, want ErrNoCgroup", err)
	}
}
