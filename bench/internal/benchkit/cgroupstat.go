package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/resources"
)

const cgroupRoot = "/sys/fs/cgroup"

// CgroupV2 reports whether this host's cgroups are unified (v2 only).
func CgroupV2() bool { return cgroups.Mode() == cgroups.Unified }

// CgroupCPU is the CPU time used so far by the processes of cgroup p (a path
// like "/parent/id", relative to each hierarchy's root): cpuacct.usage on
// cgroup v1, cpu.stat usage_usec on v2.
func CgroupCPU(p string) (time.Duration, error) {
	if CgroupV2() {
		v, err := statField(filepath.Join(cgroupRoot, p, "cpu.stat"), "usage_usec")
		return time.Duration(v) * time.Microsecond, err
	}
	v, err := readInt(filepath.Join(cgroupRoot, "cpuacct", p, "cpuacct.usage"))
	return time.Duration(v), err
}

// Memory is a cgroup's memory use.
type Memory struct {
	Usage int64 // everything charged: v1 memory.usage_in_bytes, v2 memory.current
	Anon  int64 // anonymous memory (process heaps and stacks): v1 total_rss, v2 anon
	File  int64 // page cache: v1 total_cache, v2 file
}

// CgroupMemory reads the memory use of cgroup p.
func CgroupMemory(p string) (Memory, error) {
	var m Memory
	var err error
	if CgroupV2() {
		dir := filepath.Join(cgroupRoot, p)
		if m.Usage, err = readInt(filepath.Join(dir, "memory.current")); err != nil {
			return m, err
		}
		st, err := readStat(filepath.Join(dir, "memory.stat"))
		m.Anon, m.File = st["anon"], st["file"]
		return m, err
	}
	dir := filepath.Join(cgroupRoot, "memory", p)
	if m.Usage, err = readInt(filepath.Join(dir, "memory.usage_in_bytes")); err != nil {
		return m, err
	}
	st, err := readStat(filepath.Join(dir, "memory.stat"))
	m.Anon, m.File = st["total_rss"], st["total_cache"]
	return m, err
}

// CgroupQuotaFile is the file that holds cgroup p's CFS quota and the
// value that means "no quota": cpu.cfs_quota_us ("-1") on v1, cpu.max
// ("max 100000") on v2.
func CgroupQuotaFile(p string) string {
	if CgroupV2() {
		return filepath.Join(cgroupRoot, p, "cpu.max")
	}
	return filepath.Join(cgroupRoot, "cpu", p, "cpu.cfs_quota_us")
}

// SetCPUQuota sets cgroup p's CFS quota to cpus CPUs per 100 ms period,
// or removes the quota when cpus is 0.
func SetCPUQuota(p string, cpus float64) error {
	const period = 100000
	var v string
	switch {
	case CgroupV2() && cpus == 0:
		v = fmt.Sprintf("max %d", period)
	case CgroupV2():
		v = fmt.Sprintf("%d %d", int64(cpus*period), period)
	case cpus == 0:
		v = "-1"
	default:
		if err := os.WriteFile(filepath.Join(cgroupRoot, "cpu", p, "cpu.cfs_period_us"), []byte(strconv.Itoa(period)), 0); err != nil {
			return fmt.Errorf("cpu period of %s: %w", p, err)
		}
		v = strconv.FormatInt(int64(cpus*period), 10)
	}
	if err := os.WriteFile(CgroupQuotaFile(p), []byte(v), 0); err != nil {
		return fmt.Errorf("cpu quota of %s: %w", p, err)
	}
	return nil
}

// CPUQuota reads cgroup p's quota as written in its file.
func CPUQuota(p string) (string, error) {
	b, err := os.ReadFile(CgroupQuotaFile(p))
	return strings.TrimSpace(string(b)), err
}

// ProcCPU is the user and system CPU time process pid used so far.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	d, err := parseProcStatCPU(b)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return d, nil
}

// parseProcStatCPU reads utime + stime from a /proc/PID/stat line.
func parseProcStatCPU(b []byte) (time.Duration, error) {
	// The command may contain spaces and parentheses: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command field")
	}
	f := strings.Fields(string(b[i+1:]))
	// After ")" comes state, field 3 of proc(5); utime and stime are 14, 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command", len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("utime %q stime %q", f[11], f[12])
	}
	// USER_HZ is 100 on every Linux architecture cove runs on.
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// ProcRSS is the resident set size of process pid (VmRSS).
func ProcRSS(pid int) (int64, error) {
	st, err := readStat(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	kb, ok := st["VmRSS:"]
	if !ok {
		return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	}
	return kb << 10, nil
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// readStat reads "key value" lines (memory.stat, cpu.stat, /proc status).
func readStat(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		if v, err := strconv.ParseInt(fs[1], 10, 64); err == nil {
			out[fs[0]] = v
		}
	}
	return out, sc.Err()
}

func statField(path, key string) (int64, error) {
	st, err := readStat(path)
	if err != nil {
		return 0, err
	}
	v, ok := st[key]
	if !ok {
		return 0, fmt.Errorf("%s: no %s", path, key)
	}
	return v, nil
}

// RemoveCgroups removes cgroup parent (a path relative to each hierarchy's
// root) and the cgroups directly below it, from every hierarchy, once
// their processes are gone. It reports what it could not remove.
func RemoveCgroups(parent string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	children := map[string]bool{}
	for _, h := range []string{"", "cpu", "cpuacct", "memory", "pids", "blkio", "freezer", "devices", "cpuset", "systemd", "unified"} {
		ents, err := os.ReadDir(filepath.Join(cgroupRoot, h, parent))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() {
				children[e.Name()] = true
			}
		}
	}
	for c := range children {
		if err := resources.Remove(ctx, path.Join("/", parent, c)); err != nil {
			Progress("cleanup: cgroup %s/%s: %v", parent, c, err)
		}
	}
	if removed, err := resources.RemoveParent(parent); err != nil {
		Progress("cleanup: cgroup %s: %v", parent, err)
	} else if !removed {
		Progress("cleanup: cgroup %s still has cgroups or processes; left in place", parent)
	}
}
