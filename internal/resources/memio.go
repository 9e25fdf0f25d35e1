package resources

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Memory reclaim target, swap and block IO limits: the parts of Limits
// beyond CPU, memory hard limit and pids, on cgroup v1 and v2.
//
//   - MemoryHighBytes, the reclaim target: v1 memory.soft_limit_in_bytes
//     (reclaimed from first when the host is short of memory), v2
//     memory.high (the cgroup is throttled and reclaimed above it, never
//     OOM-killed for it).
//   - SwapBytes: v1 memory.memsw.limit_in_bytes (memory + swap; only where
//     the kernel accounts swap), v2 memory.swap.max (only where the file
//     exists).
//   - IO: v1 blkio.throttle.{read,write}_{bps,iops}_device, v2 io.max.

// NoSwap as Limits.SwapBytes: the cgroup may not use swap at all.
const NoSwap = -1

// DeviceIO limits IO on one block device (major:minor, a whole disk: the
// kernel throttles disks, not partitions). A zero rate is unlimited.
type DeviceIO struct {
	Major, Minor                           int64
	ReadBPS, WriteBPS, ReadIOPS, WriteIOPS uint64
}

func (d DeviceIO) limited() bool {
	return d.ReadBPS > 0 || d.WriteBPS > 0 || d.ReadIOPS > 0 || d.WriteIOPS > 0
}

// v1MemswFile is the v1 file that exists only where the kernel accounts
// swap (swapaccount=1, the default on current kernels).
var v1MemswFile = filepath.Join(cgroupRoot, "memory", "memory.memsw.limit_in_bytes")

// swapTotal is the memory+swap limit for l on v1 (and what runc converts to
// memory.swap.max on v2): -1 for unlimited.
func (l Limits) swapTotal() int64 {
	switch {
	case l.MemoryBytes <= 0 || l.SwapBytes == 0:
		return -1
	case l.SwapBytes == NoSwap:
		return l.MemoryBytes
	}
	return l.MemoryBytes + l.SwapBytes
}

// memIOV1 adds l's reclaim target, swap and IO limits for cgroup p to res,
// which cgroup1.New applies. Limits that l leaves out are lifted.
func memIOV1(p string, res *specs.LinuxResources, l Limits) error {
	high := int64(-1)
	if l.MemoryHighBytes > 0 {
		high = l.MemoryHighBytes
	}
	res.Memory.Reservation = &high
	res.BlockIO = blockIOV1(l.IO, true)
	if _, err := os.Stat(v1MemswFile); err != nil {
		return nil // swap not accounted: nothing to limit it with
	}
	res.Memory.Swap = ptr(l.swapTotal())
	// cgroup1.New writes the memory limit before memory+swap, and the
	// kernel refuses a memory limit above the current memory+swap one: an
	// existing cgroup's is lifted first, for the moment in between.
	memsw := filepath.Join(cgroupRoot, "memory", p, "memory.memsw.limit_in_bytes")
	if err := os.WriteFile(memsw, []byte("-1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("lift memory+swap limit: %w", err)
	}
	return nil
}

// blockIOV1 is the OCI form of io. With lift, a zero rate of a listed
// device is written too, which removes an earlier limit (runc and
// containerd write "M:m 0"); else only the limits are listed.
func blockIOV1(io []DeviceIO, lift bool) *specs.LinuxBlockIO {
	if len(io) == 0 {
		return nil
	}
	b := &specs.LinuxBlockIO{}
	add := func(to *[]specs.LinuxThrottleDevice, d DeviceIO, rate uint64) {
		if rate == 0 && !lift {
			return
		}
		td := specs.LinuxThrottleDevice{Rate: rate}
		td.Major, td.Minor = d.Major, d.Minor
		*to = append(*to, td)
	}
	for _, d := range io {
		add(&b.ThrottleReadBpsDevice, d, d.ReadBPS)
		add(&b.ThrottleWriteBpsDevice, d, d.WriteBPS)
		add(&b.ThrottleReadIOPSDevice, d, d.ReadIOPS)
		add(&b.ThrottleWriteIOPSDevice, d, d.WriteIOPS)
	}
	return b
}

// memIOV2 adds l's reclaim target to res, which cgroup2.NewManager applies.
// Swap and IO are written by applyV2 once the cgroup exists.
func memIOV2(res *cgroup2.Resources, l Limits) {
	if res.Memory == nil {
		return // no memory controller, and no limit asked
	}
	high := int64(math.MaxInt64) // the kernel shows it as "max"
	if l.MemoryHighBytes > 0 {
		high = l.MemoryHighBytes
	}
	res.Memory.High = &high
}

// applyV2 writes l's swap and IO limits to the v2 cgroup directory dir.
// Swap is left alone where the kernel has no memory.swap.max (no swap
// support); IO is written only with the io controller (ioOK), which the
// caller requires when l limits IO.
func applyV2(dir string, l Limits, ioOK bool) error {
	swapFile := filepath.Join(dir, "memory.swap.max")
	if _, err := os.Stat(swapFile); err == nil {
		v := "max"
		switch {
		case l.MemoryBytes <= 0 || l.SwapBytes == 0:
		case l.SwapBytes == NoSwap:
			v = "0"
		default:
			v = strconv.FormatInt(l.SwapBytes, 10)
		}
		if err := os.WriteFile(swapFile, []byte(v), 0); err != nil {
			return fmt.Errorf("swap limit: %w", err)
		}
	}
	for _, d := range l.IO {
		if !ioOK {
			break
		}
		if err := os.WriteFile(filepath.Join(dir, "io.max"), []byte(ioMaxLine(d)), 0); err != nil {
			return fmt.Errorf("io limit on %d:%d: %w", d.Major, d.Minor, err)
		}
	}
	return nil
}

// ioMaxLine is d as a line of v2 io.max; "max" lifts a limit.
func ioMaxLine(d DeviceIO) string {
	f := func(v uint64) string {
		if v == 0 {
			return "max"
		}
		return strconv.FormatUint(v, 10)
	}
	return fmt.Sprintf("%d:%d rbps=%s wbps=%s riops=%s wiops=%s", d.Major, d.Minor, f(d.ReadBPS), f(d.WriteBPS), f(d.ReadIOPS), f(d.WriteIOPS))
}

// hasIO reports whether l limits IO on any device.
func (l Limits) hasIO() bool {
	for _, d := range l.IO {
		if d.limited() {
			return true
		}
	}
	return false
}

// SpecMemoryIO adds l's reclaim target, swap and IO limits to out, the
// resources of an OCI spec that runc applies to a container's own cgroup
// (a container without a group). runc maps the memory reservation to
// memory.low on v2, not the reclaim target, so on v2 memory.high goes in
// the unified map.
func SpecMemoryIO(out *specs.LinuxResources, l Limits) {
	specMemoryIO(out, l, cgroups.Mode() == cgroups.Unified)
}

func specMemoryIO(out *specs.LinuxResources, l Limits, unified bool) {
	if l.MemoryHighBytes > 0 || (l.MemoryBytes > 0 && l.SwapBytes != 0) {
		if out.Memory == nil {
			out.Memory = &specs.LinuxMemory{}
		}
	}
	if l.MemoryHighBytes > 0 {
		if unified {
			if out.Unified == nil {
				out.Unified = map[string]string{}
			}
			out.Unified["memory.high"] = strconv.FormatInt(l.MemoryHighBytes, 10)
		} else {
			out.Memory.Reservation = ptr(l.MemoryHighBytes)
		}
	}
	if l.MemoryBytes > 0 && l.SwapBytes != 0 {
		// v1: only where swap is accounted (runc fails on a missing
		// memsw file); v2: runc converts memory+swap to memory.swap.max
		// and skips it where the kernel has no swap support.
		if _, err := os.Stat(v1MemswFile); unified || err == nil {
			out.Memory.Swap = ptr(l.swapTotal())
		}
	}
	if l.hasIO() {
		out.BlockIO = blockIOV1(l.IO, false) // runc converts it to io.max on v2
	}
}

// BlockDevice is the whole disk (major, minor) holding the file system of
// path, whose IO the kernel can throttle. A partition is resolved to its
// disk. A file system without a block device of its own (tmpfs, overlay, a
// btrfs subvolume, NFS) is an error saying so.
func BlockDevice(path string) (major, minor int64, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, fmt.Errorf("device of %s: %w", path, err)
	}
	maj, min := int64(unix.Major(st.Dev)), int64(unix.Minor(st.Dev))
	return blockDisk("/sys/dev/block", path, maj, min)
}

// blockDisk resolves maj:min under sysDevBlock (/sys/dev/block) to its disk.
func blockDisk(sysDevBlock, path string, maj, min int64) (int64, int64, error) {
	dev := filepath.Join(sysDevBlock, fmt.Sprintf("%d:%d", maj, min))
	if _, err := os.Stat(dev); err != nil {
		return 0, 0, fmt.Errorf("%s is on a file system without a block device of its own (device %d:%d, e.g. tmpfs, overlay or btrfs): "+
			"IO limits need the data dir on a disk or partition", path, maj, min)
	}
	if _, err := os.Stat(filepath.Join(dev, "partition")); errors.Is(err, os.ErrNotExist) {
		return maj, min, nil
	}
	// A partition: its parent directory in sysfs is the disk, whose dev
	// file holds major:minor.
	real, err := filepath.EvalSymlinks(dev)
	if err != nil {
		return 0, 0, fmt.Errorf("disk of partition %d:%d holding %s: %w", maj, min, path, err)
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(real), "dev"))
	if err != nil {
		return 0, 0, fmt.Errorf("disk of partition %d:%d holding %s: %w", maj, min, path, err)
	}
	var dmaj, dmin int64
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &dmaj, &dmin); err != nil {
		return 0, 0, fmt.Errorf("disk of partition %d:%d holding %s: %q: %w", maj, min, path, b, err)
	}
	return dmaj, dmin, nil
}
