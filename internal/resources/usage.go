package resources

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
)

// Counters are what a cgroup (an environment's, all its containers
// together) has used, read at one moment. CPU, throttling, IO and OOM kills
// are cumulative since the cgroup was made: they start again from zero when
// the environment restarts.
type Counters struct {
	CPU       time.Duration // CPU time used
	Throttled time.Duration // time runnable but held back by the CPU quota
	// CPULimit is the CPU quota in cores (0: none).
	CPULimit float64
	// Memory is the memory in use without the page cache the kernel can
	// drop at once (inactive file pages); MemoryLimit the hard limit (0:
	// none).
	Memory, MemoryLimit uint64
	// IORead and IOWrite are bytes moved to and from block devices.
	IORead, IOWrite uint64
	// Pids is the number of tasks; PidsLimit the limit (0: none).
	Pids, PidsLimit uint64
	// OOMKills counts processes the kernel killed for lack of memory in
	// the cgroup (0 on kernels that do not count them).
	OOMKills uint64
}

// UsageReader reads the counters of environments' cgroups below one cgroup
// parent, on cgroup v1 (legacy and hybrid hosts: the v1 controllers) or v2.
// It only reads: it never creates a cgroup nor changes a limit. Each read
// opens a handful of small files; nothing is cached.
type UsageReader struct {
	parent string
	v2     bool
	root   string // v2: the unified mount; v1: the directory holding each controller's mount
}

// NewUsageReader returns a reader of environments' cgroups below parent (the
// runtime's cgroup parent, like "cove") on this host's cgroup hierarchy.
func NewUsageReader(parent string) *UsageReader {
	return &UsageReader{parent: parent, v2: cgroups.Mode() == cgroups.Unified, root: cgroupRoot}
}

// newUsageReaderAt reads a cgroupfs rooted at root instead (tests: a fake
// cgroupfs directory).
func newUsageReaderAt(root, parent string, v2 bool) *UsageReader {
	return &UsageReader{parent: parent, v2: v2, root: root}
}

// ErrNoCgroup is returned by Read for an environment without a cgroup (not
// running).
var ErrNoCgroup = errors.New("no cgroup")

// Read returns the counters of environment id's cgroup.
func (u *UsageReader) Read(id string) (Counters, error) {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") {
		return Counters{}, fmt.Errorf("read usage: invalid environment id %q", id)
	}
	p := CgroupPath(u.parent, id)
	var (
		c   Counters
		err error
	)
	if u.v2 {
		c, err = readV2(filepath.Join(u.root, p))
	} else {
		c, err = readV1(u.root, p)
	}
	if err != nil {
		return Counters{}, fmt.Errorf("read usage of %s: %w", p, err)
	}
	return c, nil
}

// readV1 reads the v1 controllers' files of cgroup p. The CPU accounting
// file must exist (else the cgroup does not); the others are optional, as a
// host may lack a controller.
func readV1(root, p string) (Counters, error) {
	var c Counters
	dir := func(ctrl string) string { return filepath.Join(root, ctrl, p) }
	usage, err := readUint(filepath.Join(dir("cpuacct"), "cpuacct.usage"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return c, ErrNoCgroup
		}
		return c, err
	}
	c.CPU = time.Duration(usage)
	kv, err := readKV(filepath.Join(dir("cpu"), "cpu.stat"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return c, err
	}
	c.Throttled = time.Duration(kv["throttled_time"]) // nanoseconds
	quota, qerr := readInt(filepath.Join(dir("cpu"), "cpu.cfs_quota_us"))
	period, perr := readInt(filepath.Join(dir("cpu"), "cpu.cfs_period_us"))
	if qerr == nil && perr == nil && quota > 0 && period > 0 {
		c.CPULimit = float64(quota) / float64(period)
	}

	if mem, err := readUint(filepath.Join(dir("memory"), "memory.usage_in_bytes")); err == nil {
		kv, err := readKV(filepath.Join(dir("memory"), "memory.stat"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return c, err
		}
		c.Memory = withoutInactiveFile(mem, kv["total_inactive_file"])
		if lim, err := readUint(filepath.Join(dir("memory"), "memory.limit_in_bytes")); err == nil {
			c.MemoryLimit = v1Limit(lim)
		}
		oom, err := readKV(filepath.Join(dir("memory"), "memory.oom_control"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return c, err
		}
		c.OOMKills = oom["oom_kill"]
	} else if !errors.Is(err, os.ErrNotExist) {
		return c, err
	}

	// The throttle policy's counters count every bio whatever the IO
	// scheduler; the CFQ-only files are gone with blk-mq.
	for _, f := range []string{"blkio.throttle.io_service_bytes_recursive", "blkio.io_service_bytes_recursive"} {
		r, w, err := readBlkio(filepath.Join(dir("blkio"), f))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return c, err
		}
		c.IORead, c.IOWrite = r, w
		break
	}
	c.Pids, c.PidsLimit, err = readPids(dir("pids"))
	return c, err
}

// readV2 reads the files of the v2 cgroup directory dir.
func readV2(dir string) (Counters, error) {
	var c Counters
	kv, err := readKV(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return c, ErrNoCgroup
		}
		return c, err
	}
	c.CPU = time.Duration(kv["usage_usec"]) * time.Microsecond
	c.Throttled = time.Duration(kv["throttled_usec"]) * time.Microsecond
	if b, err := readSmall(filepath.Join(dir, "cpu.max")); err == nil {
		// "max 100000" or "200000 100000"
		if f := strings.Fields(string(b)); len(f) == 2 && f[0] != "max" {
			q, qerr := strconv.ParseUint(f[0], 10, 64)
			p, perr := strconv.ParseUint(f[1], 10, 64)
			if qerr == nil && perr == nil && q > 0 && p > 0 {
				c.CPULimit = float64(q) / float64(p)
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return c, err
	}

	if mem, err := readUint(filepath.Join(dir, "memory.current")); err == nil {
		st, err := readKV(filepath.Join(dir, "memory.stat"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return c, err
		}
		c.Memory = withoutInactiveFile(mem, st["inactive_file"])
		if c.MemoryLimit, err = readMax(filepath.Join(dir, "memory.max")); err != nil && !errors.Is(err, os.ErrNotExist) {
			return c, err
		}
		ev, err := readKV(filepath.Join(dir, "memory.events"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return c, err
		}
		c.OOMKills = ev["oom_kill"]
	} else if !errors.Is(err, os.ErrNotExist) {
		return c, err
	}

	if c.IORead, c.IOWrite, err = readIOStat(filepath.Join(dir, "io.stat")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return c, err
	}
	c.Pids, c.PidsLimit, err = readPids(dir)
	return c, err
}

// withoutInactiveFile is memory in use less the inactive file cache, as
// the kernel's reclaim and most tools (cAdvisor's working set, docker
// stats) count it.
func withoutInactiveFile(usage, inactive uint64) uint64 {
	if inactive > usage {
		return 0
	}
	return usage - inactive
}

// v1Limit maps v1's "no limit" (a page-rounded maximum) to 0.
func v1Limit(v uint64) uint64 {
	if v >= math.MaxInt64/2 {
		return 0
	}
	return v
}

func readPids(dir string) (cur, limit uint64, err error) {
	cur, err = readUint(filepath.Join(dir, "pids.current"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	limit, err = readMax(filepath.Join(dir, "pids.max"))
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return cur, limit, err
}

// readBlkio sums a v1 blkio file's Read and Write lines over devices:
// "8:0 Read 4096".
func readBlkio(name string) (read, write uint64, err error) {
	b, err := readSmall(name)
	if err != nil {
		return 0, 0, err
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) != 3 {
			continue // "Total N"
		}
		v, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		switch f[1] {
		case "Read":
			read += v
		case "Write":
			write += v
		}
	}
	return read, write, nil
}

// readIOStat sums v2 io.stat's rbytes and wbytes over devices:
// "8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0".
func readIOStat(name string) (read, write uint64, err error) {
	b, err := readSmall(name)
	if err != nil {
		return 0, 0, err
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		for _, kv := range strings.Fields(s.Text())[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || (k != "rbytes" && k != "wbytes") {
				continue
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("%s: %w", name, err)
			}
			if k == "rbytes" {
				read += n
			} else {
				write += n
			}
		}
	}
	return read, write, nil
}

// readKV reads a "key value" per line file (cpu.stat, memory.stat,
// memory.events, memory.oom_control); values that are not numbers are
// skipped.
func readKV(name string) (map[string]uint64, error) {
	b, err := readSmall(name)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out, nil
}

// readMax reads a limit file holding a number or "max" (0).
func readMax(name string) (uint64, error) {
	b, err := readSmall(name)
	if err != nil {
		return 0, err
	}
	v := strings.TrimSpace(string(b))
	if v == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return n, nil
}

func readUint(name string) (uint64, error) {
	b, err := readSmall(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return n, nil
}

func readInt(name string) (int64, error) {
	b, err := readSmall(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return n, nil
}

// maxStatFile bounds what is read of one cgroup file: memory.stat is a few
// KiB; io.stat grows by a line per device.
const maxStatFile = 64 << 10

// readSmall reads at most maxStatFile bytes of a cgroup file. Kernel files
// report a size of 0 or 4096, so the size is not trusted.
func readSmall(name string) ([]byte, error) {
	f, err := os.Open(path.Clean(name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxStatFile))
}
