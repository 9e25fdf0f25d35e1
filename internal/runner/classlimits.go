package runner

import (
	"fmt"
	"os"
	"strings"

	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/runtime"
)

// DefaultMemoryHighPercent is the reclaim target of a class that sets
// none, in percent of its memory limit.
const DefaultMemoryHighPercent = 90

// ClassLimits are a class's limits beyond those its EnvironmentClass
// carries (CPUs, memory limit, pids): the server never sees them, the
// runner applies them to every environment of the class.
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

func (l ClassLimits) limitsIO() bool {
	return l.ReadBPS > 0 || l.WriteBPS > 0 || l.ReadIOPS > 0 || l.WriteIOPS > 0
}

// check refuses limits that cannot be applied as asked.
func (l ClassLimits) check(class string) error {
	if l.MemoryHighPercent < 0 || l.MemoryHighPercent > 100 {
		return fmt.Errorf("class %s: memory reclaim target %d%%: want 1 to 100 (100: none)", class, l.MemoryHighPercent)
	}
	if l.SwapBytes < -1 {
		return fmt.Errorf("class %s: swap %d: want bytes, 0 for none or -1 for unlimited", class, l.SwapBytes)
	}
	return nil
}

// classLimits are the runner's ClassLimits by class id, with the disk that
// IO limits apply to.
type classLimits struct {
	byClass      map[string]ClassLimits
	major, minor int64 // disk of the data dir, when a class limits IO
}

// newClassLimits checks byClass and finds the disk of dataDir if a class
// limits IO: a runner whose data dir has no block device of its own
// refuses to start rather than run environments without the IO limits
// their class promises.
func newClassLimits(byClass map[string]ClassLimits, dataDir string) (classLimits, error) {
	cl := classLimits{byClass: byClass}
	for id, l := range byClass {
		if err := l.check(id); err != nil {
			return cl, err
		}
		if l.limitsIO() && cl.major == 0 && cl.minor == 0 {
			var err error
			if cl.major, cl.minor, err = resources.BlockDevice(dataDir); err != nil {
				return cl, fmt.Errorf("class %s limits block IO: %w", id, err)
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
