package resources

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	"github.com/containerd/cgroups/v3/cgroup2"
)

// CPUStat is what a cgroup's CPU controllers counted since it was made.
type CPUStat struct {
	Usage       time.Duration // CPU time used
	NrThrottled uint64        // CFS periods in which it was throttled
	Throttled   time.Duration // time it was throttled for
}

// CPULimits are the CPU limits the CPU control loop sets on a cgroup.
type CPULimits struct {
	// QuotaMillis is the CFS quota (1000 = one CPU per period); 0 or less
	// means unlimited.
	QuotaMillis int64
	// WeightMillis is the guarantee the weight is derived from: shares of
	// 1024 per CPU on cgroup v1, the matching cpu.weight on v2. 0 leaves
	// the weight alone.
	WeightMillis int64
	// Workload, when set, is the CPU group holding the environment's
	// workload (procgroups' "workload"), relative to the cgroup: looked
	// for directly below it, then below its dev container (a Compose
	// environment's: the child named like the cgroup, the environment's
	// id). That group, and the cgroups below the environment's that have a
	// quota of their own and do not contain it (Compose services), get
	// WorkloadQuotaMillis; the environment's cgroup and the dev container
	// get QuotaMillis. Until the group exists they all get
	// WorkloadQuotaMillis, and Set says so with an error that is
	// fs.ErrNotExist, after writing.
	Workload            string
	WorkloadQuotaMillis int64
}

// CPUFiles reads and writes the CPU control of the cgroups below one
// cgroup hierarchy (v1: its cpu and cpuacct controllers, v2: the unified
// hierarchy). The zero value is not usable: use HostCPUFiles, or
// CPUFilesV1/CPUFilesV2 on another root (a fake cgroupfs in tests).
type CPUFiles struct {
	v2root string // v2 mountpoint; "" for v1
	cpu    cpuV1
	acct   cpuacctV1
}

type cpuV1 interface {
	Path(string) string
	Stat(string, *v1stats.Metrics) error
}

type cpuacctV1 interface {
	Path(string) string
}

// CPUFilesV1 is CPU control on cgroup v1 hierarchies mounted below root
// (root/cpu and root/cpuacct, which may be the same hierarchy).
func CPUFilesV1(root string) *CPUFiles {
	return &CPUFiles{cpu: cgroup1.NewCpu(root), acct: cgroup1.NewCpuacct(root)}
}

// CPUFilesV2 is CPU control on the cgroup v2 hierarchy mounted at root.
func CPUFilesV2(root string) *CPUFiles { return &CPUFiles{v2root: root} }

// HostCPUFiles is CPU control on this host's hierarchies: v2 when the
// host is unified, else v1 (on hybrid hosts the controllers are on v1).
func HostCPUFiles() (*CPUFiles, error) {
	switch cgroups.Mode() {
	case cgroups.Unified:
		return CPUFilesV2(cgroupRoot), nil
	case cgroups.Legacy, cgroups.Hybrid:
		return CPUFilesV1(cgroupRoot), nil
	}
	return nil, errors.New("no cgroup hierarchy mounted")
}

// Read reads what the cgroup at p (a path like CgroupPath returns)
// counted: its CPU time, and the throttling of it and of the cgroups
// below it that have a quota of their own. A cgroup that does not exist
// gives an error that is fs.ErrNotExist.
func (c *CPUFiles) Read(p string) (CPUStat, error) {
	st, err := c.read(p)
	if err != nil {
		return CPUStat{}, fmt.Errorf("read CPU use of cgroup %s: %w", p, err)
	}
	// Below an environment's cgroup, the members of a Compose
	// environment have the same quota as the whole and the kernel may
	// count the throttling in theirs.
	dir := c.cpuDir(p)
	children, err := c.limitedChildren(dir)
	if err != nil {
		return CPUStat{}, fmt.Errorf("read CPU use of cgroup %s: %w", p, err)
	}
	for _, ch := range children {
		rel, err := filepath.Rel(dir, ch)
		if err != nil {
			return CPUStat{}, err
		}
		cst, err := c.readThrottling(filepath.Join(p, rel))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return CPUStat{}, fmt.Errorf("read CPU use of cgroup %s: %w", filepath.Join(p, rel), err)
		}
		st.NrThrottled += cst.NrThrottled
		st.Throttled += cst.Throttled
	}
	return st, nil
}

// read reads what the cgroup at p counted, its members aside.
func (c *CPUFiles) read(p string) (CPUStat, error) {
	if c.v2root != "" {
		return readCPUV2(filepath.Join(c.v2root, p))
	}
	return c.readV1(p)
}

// readThrottling reads the throttling of the cgroup at p.
func (c *CPUFiles) readThrottling(p string) (CPUStat, error) {
	if c.v2root != "" {
		return readCPUV2(filepath.Join(c.v2root, p))
	}
	m := &v1stats.Metrics{CPU: &v1stats.CPUStat{Usage: &v1stats.CPUUsage{}, Throttling: &v1stats.Throttle{}}}
	if err := c.cpu.Stat(p, m); err != nil {
		return CPUStat{}, err
	}
	return CPUStat{NrThrottled: m.CPU.Throttling.ThrottledPeriods, Throttled: time.Duration(m.CPU.Throttling.ThrottledTime)}, nil
}

// readV1 reads cpuacct.usage and cpu.stat: not cpuacct's Stat, which
// also reads the per-CPU and user/system figures the loop has no use for,
// every second for every environment.
func (c *CPUFiles) readV1(p string) (CPUStat, error) {
	b, err := os.ReadFile(filepath.Join(c.acct.Path(p), "cpuacct.usage"))
	if err != nil {
		return CPUStat{}, err
	}
	usage, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return CPUStat{}, fmt.Errorf("cpuacct.usage: %w", err)
	}
	st, err := c.readThrottling(p)
	if err != nil {
		return CPUStat{}, err
	}
	st.Usage = time.Duration(usage)
	return st, nil
}

// readCPUV2 reads dir's cpu.stat (usage_usec, nr_throttled, throttled_usec).
func readCPUV2(dir string) (CPUStat, error) {
	f, err := os.Open(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return CPUStat{}, err
	}
	defer f.Close()
	var st CPUStat
	var seen bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return CPUStat{}, fmt.Errorf("cpu.stat %s: %w", k, err)
		}
		switch k {
		case "usage_usec":
			st.Usage, seen = time.Duration(n)*time.Microsecond, true
		case "nr_throttled":
			st.NrThrottled = n
		case "throttled_usec":
			st.Throttled = time.Duration(n) * time.Microsecond
		}
	}
	if err := sc.Err(); err != nil {
		return CPUStat{}, err
	}
	if !seen {
		return CPUStat{}, errors.New("cpu.stat has no usage_usec")
	}
	return st, nil
}

// Set sets the CPU limits of the cgroup at p. The cgroups below p that
// have a quota of their own (the containers of a Compose environment,
// each made with the class's limits) get the same quota, so the
// environment's quota is what limits them; on cgroup v1, where the kernel
// refuses a child quota above its parent's, a lower quota is written to
// the children first and a higher one to p first.
func (c *CPUFiles) Set(p string, l CPULimits) error {
	if err := c.set(p, l); err != nil {
		return fmt.Errorf("set CPU limits of cgroup %s: %w", p, err)
	}
	return nil
}

func (c *CPUFiles) set(p string, l CPULimits) error {
	dir := c.cpuDir(p)
	if _, err := os.Stat(dir); err != nil {
		return err
	}
	old, err := c.quota(dir)
	if err != nil {
		return err
	}
	children, err := c.limitedChildren(dir)
	if err != nil {
		return err
	}
	quota, childQuota := micros(l.QuotaMillis), func(string) int64 { return micros(l.QuotaMillis) }
	var missing error
	if l.Workload != "" {
		wdir, err := c.workloadDir(dir, l.Workload)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			quota = micros(l.WorkloadQuotaMillis)
			childQuota = func(string) int64 { return quota }
			missing = fmt.Errorf("CPU group %s not there yet: %w", l.Workload, err)
		case err != nil:
			return err
		default:
			if !slices.Contains(children, wdir) {
				children = append(children, wdir)
			}
			// Parents before children, as the walk lists them.
			slices.SortStableFunc(children, func(a, b string) int {
				return strings.Count(a, string(filepath.Separator)) - strings.Count(b, string(filepath.Separator))
			})
			childQuota = func(ch string) int64 {
				if strings.HasPrefix(wdir, ch+string(filepath.Separator)) {
					return quota // the dev container, holding the workload group
				}
				return micros(l.WorkloadQuotaMillis)
			}
		}
	}
	own := func() error { return c.write(p, quota, l.WeightMillis) }
	lowerFirst := quota >= 0 && (old < 0 || quota < old)
	if !lowerFirst {
		if err := own(); err != nil {
			return err
		}
	}
	// Deepest first when lowering, shallowest first when raising.
	if lowerFirst {
		slices.Reverse(children)
	}
	for _, ch := range children {
		rel, err := filepath.Rel(dir, ch)
		if err != nil {
			return err
		}
		if err := c.write(filepath.Join(p, rel), childQuota(ch), 0); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if lowerFirst {
		if err := own(); err != nil {
			return err
		}
	}
	return missing
}

// micros is a quota in millis as microseconds per CPUPeriod (-1:
// unlimited).
func micros(m int64) int64 {
	if m <= 0 {
		return -1
	}
	return max(m*CPUPeriod/1000, 1000) // the kernel's minimum is 1 ms
}

// workloadDir is the directory of the workload group w of the
// environment whose cgroup is at dir: dir/w, or dir/<base of dir>/w.
func (c *CPUFiles) workloadDir(dir, w string) (string, error) {
	w = filepath.Clean("/" + w)[1:]
	var err error
	for _, d := range []string{filepath.Join(dir, w), filepath.Join(dir, filepath.Base(dir), w)} {
		var fi os.FileInfo
		if fi, err = os.Stat(d); err == nil && fi.IsDir() {
			return d, nil
		}
		if err == nil {
			err = fmt.Errorf("%s: not a directory: %w", d, fs.ErrNotExist)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	return "", err
}

// cpuDir is the directory of cgroup p in the cpu hierarchy.
func (c *CPUFiles) cpuDir(p string) string {
	if c.v2root != "" {
		return filepath.Join(c.v2root, p)
	}
	return c.cpu.Path(p)
}

// write writes the quota and (if weight is positive) the weight of p.
func (c *CPUFiles) write(p string, quota, weight int64) error {
	var shares *uint64
	if weight > 0 {
		shares = ptr(uint64(min(max(weight*1024/1000, 2), 262144)))
	}
	if c.v2root != "" {
		m, err := cgroup2.Load(p, cgroup2.WithMountpoint(c.v2root))
		if err != nil {
			return err
		}
		var q *int64 // nil: "max"
		if quota > 0 {
			q = &quota
		}
		res := &cgroup2.CPU{Max: cgroup2.NewCPUMax(q, ptr(uint64(CPUPeriod)))}
		if shares != nil {
			res.Weight = ptr(cgroup2.ConvertCPUSharesToCgroupV2Value(*shares))
		}
		return m.Update(&cgroup2.Resources{CPU: res})
	}
	// Not cgroup1's Update: it makes the directory first, which would
	// bring back a cgroup removed meanwhile.
	dir := c.cpu.Path(p)
	if shares != nil {
		if err := writeExisting(filepath.Join(dir, "cpu.shares"), strconv.FormatUint(*shares, 10)); err != nil {
			return err
		}
	}
	if err := writeExisting(filepath.Join(dir, "cpu.cfs_period_us"), strconv.Itoa(CPUPeriod)); err != nil {
		return err
	}
	return writeExisting(filepath.Join(dir, "cpu.cfs_quota_us"), strconv.FormatInt(quota, 10))
}

// writeExisting writes s to the existing file name.
func writeExisting(name, s string) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// quota is the quota, in microseconds per CPUPeriod, of the cgroup at dir
// (-1: unlimited).
func (c *CPUFiles) quota(dir string) (int64, error) {
	if c.v2root == "" {
		b, err := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us"))
		if err != nil {
			return 0, err
		}
		return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	b, err := os.ReadFile(filepath.Join(dir, "cpu.max"))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("empty cpu.max")
	}
	if f[0] == "max" {
		return -1, nil
	}
	q, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, err
	}
	if len(f) == 2 { // in another period: scale to ours
		if period, err := strconv.ParseInt(f[1], 10, 64); err == nil && period > 0 {
			q = q * CPUPeriod / period
		}
	}
	return q, nil
}

// limitedChildren are the cgroups below dir (parents before their
// children) that have a quota of their own.
func (c *CPUFiles) limitedChildren(dir string) ([]string, error) {
	// A directory's link count is 2 plus its subdirectories on cgroupfs
	// (and most file systems): most environments have none, and a stat
	// costs less than listing the directory every second.
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink == 2 {
		return nil, nil
	}
	var out []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != dir { // removed meanwhile
				return fs.SkipDir
			}
			return err
		}
		if !d.IsDir() || p == dir {
			return nil
		}
		if q, err := c.quota(p); err == nil && q >= 0 {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}
