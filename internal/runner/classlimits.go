package runner

import (
	"fmt"
	"os"
	"strings"

	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/runtime"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
)

// DefaultMemoryHighPercent is the reclaim target of a class that sets
// none, in percent of its memory limit.
const DefaultMemoryHighPercent = 90

// ClassLimits are a class's limits beyond its size (CPUs, memory limit,
// pids), as its EnvironmentClass carries them: the runner applies them to
// every environment of the class.
type ClassLimits struct {
	// MemoryHighPercent is the reclaim target in percent of the memory
	// limit (v1 memory.soft_limit_in_bytes, v2 memory.high): 0 means
	// DefaultMemoryHighPercent, 100 none.
	MemoryHighPercent int
	// SwapBytes is the swap an environment may use beyond its memory
	// limit: 0 none (the default), -1 unlimited.
	SwapBytes int64
	// IO limits, in bytes and operations per second (0: unlimited), on the
	// disk holding the runner's data dir (workspaces, upper directories,
	// volumes).
	ReadBPS, WriteBPS, ReadIOPS, WriteIOPS uint64
}

// limitsOf is the ClassLimits class c carries (CheckClass has refused
// negative IO rates).
func limitsOf(c *covev1.EnvironmentClass) ClassLimits {
	return ClassLimits{MemoryHighPercent: int(c.GetMemoryHighPercent()), SwapBytes: c.GetSwapBytes(),
		ReadBPS: uint64(max(c.GetIoReadBps(), 0)), WriteBPS: uint64(max(c.GetIoWriteBps(), 0)),
		ReadIOPS: uint64(max(c.GetIoReadIops(), 0)), WriteIOPS: uint64(max(c.GetIoWriteIops(), 0))}
}

func (l ClassLimits) limitsIO() bool {
	return l.ReadBPS > 0 || l.WriteBPS > 0 || l.ReadIOPS > 0 || l.WriteIOPS > 0
}

// CheckClass refuses a class whose resource definition cannot be applied
// as it says. The error names the class and the field (as the classes
// file spells it) and says what is wanted.
func CheckClass(c *covev1.EnvironmentClass) error {
	id := c.GetId()
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("class %s: %s: %s", id, field, fmt.Sprintf(format, args...))
	}
	switch {
	case c.GetCpus() < 0:
		return bad("cpus", "%d: want a number of CPUs (0: no CPU limit)", c.GetCpus())
	case c.GetCpuBurst() < 0:
		return bad("cpuBurst", "%d: want a number of CPUs, or 0 for the whole host", c.GetCpuBurst())
	case c.GetCpuBurst() > 0 && c.GetCpuBurst() < c.GetCpus():
		return bad("cpuBurst", "%d is below cpus %d: an environment may always use its class's CPUs; raise it, or use 0 for the whole host", c.GetCpuBurst(), c.GetCpus())
	case c.GetMemoryBytes() < 0:
		return bad("memory", "%d: want bytes (0: no memory limit)", c.GetMemoryBytes())
	case c.GetMemoryHighPercent() < 0 || c.GetMemoryHighPercent() > 100:
		return bad("memoryHigh", "%d%%: want 1 to 100 (100: none)", c.GetMemoryHighPercent())
	case c.GetSwapBytes() < -1:
		return bad("swap", "%d: want bytes, 0 for none or -1 for unlimited", c.GetSwapBytes())
	case c.GetPids() < 0:
		return bad("pids", "%d: want a number of processes (0: no limit)", c.GetPids())
	case c.GetDiskBytes() < 0:
		return bad("disk", "%d: want bytes", c.GetDiskBytes())
	case c.GetIoReadBps() < 0 || c.GetIoWriteBps() < 0 || c.GetIoReadIops() < 0 || c.GetIoWriteIops() < 0:
		return bad("io", "rates must not be negative (0: unlimited)")
	}
	return nil
}

// withLimitDefaults is cs with the defaults a class leaves unset filled
// in, as the runner applies them, so that what it advertises (and the
// server shows) is what environments get: the reclaim target
// (DefaultMemoryHighPercent of a memory limit).
func withLimitDefaults(cs []*covev1.EnvironmentClass) []*covev1.EnvironmentClass {
	out := make([]*covev1.EnvironmentClass, 0, len(cs))
	for _, c := range cs {
		if c.GetMemoryHighPercent() == 0 && c.GetMemoryBytes() > 0 {
			c = proto.Clone(c).(*covev1.EnvironmentClass)
			c.MemoryHighPercent = DefaultMemoryHighPercent
		}
		out = append(out, c)
	}
	return out
}

// classLimits are the runner's ClassLimits by class id, with the disk that
// IO limits apply to.
type classLimits struct {
	byClass      map[string]ClassLimits
	major, minor int64 // disk of the data dir, when a class limits IO
}

// newClassLimits checks the classes and finds the disk of dataDir if a
// class limits IO: a runner whose data dir has no block device of its own
// refuses to start rather than run environments without the IO limits
// their class promises.
func newClassLimits(cs []*covev1.EnvironmentClass, dataDir string) (classLimits, error) {
	cl := classLimits{byClass: map[string]ClassLimits{}}
	for _, c := range cs {
		if err := CheckClass(c); err != nil {
			return cl, err
		}
		l := limitsOf(c)
		cl.byClass[c.GetId()] = l
		if l.limitsIO() && cl.major == 0 && cl.minor == 0 {
			var err error
			if cl.major, cl.minor, err = resources.BlockDevice(dataDir); err != nil {
				return cl, fmt.Errorf("class %s limits block IO: %w", c.GetId(), err)
			}
		}
	}
	return cl, nil
}

// swapWarning says when a class allows swap that the host does not have
// ("" if nothing to say): the allowance is harmless but does nothing.
func (cl classLimits) swapWarning() string {
	for id, l := range cl.byClass {
		if l.SwapBytes == 0 {
			continue
		}
		if b, err := os.ReadFile("/proc/swaps"); err == nil && len(strings.Split(strings.TrimSpace(string(b)), "\n")) < 2 {
			return fmt.Sprintf("class %s allows swap but this host has none", id)
		}
	}
	return ""
}

// resources are the limits of a machine of class id sized as res.
func (cl classLimits) resources(id string, res envconfig.Resources) runtime.Resources {
	out := runtime.Resources{CPUMillis: res.CPUMillis, MemoryBytes: res.MemoryBytes, Pids: res.Pids}
	l, ok := cl.byClass[id]
	if !ok {
		l = ClassLimits{} // defaults: reclaim target at 90%, no swap
	}
	if res.MemoryBytes > 0 {
		pct := l.MemoryHighPercent
		if pct == 0 {
			pct = DefaultMemoryHighPercent
		}
		if pct < 100 {
			// In whole pages, as the kernel keeps it.
			page := int64(os.Getpagesize())
			out.MemoryHighBytes = res.MemoryBytes / 100 * int64(pct) / page * page
		}
		switch l.SwapBytes {
		case 0:
			out.SwapBytes = runtime.NoSwap
		case -1:
		default:
			out.SwapBytes = l.SwapBytes
		}
	}
	if l.limitsIO() {
		out.IO = []runtime.DeviceIO{{Major: cl.major, Minor: cl.minor,
			ReadBPS: l.ReadBPS, WriteBPS: l.WriteBPS, ReadIOPS: l.ReadIOPS, WriteIOPS: l.WriteIOPS}}
	}
	return out
}
