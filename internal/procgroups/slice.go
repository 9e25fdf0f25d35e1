package procgroups

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Time slices. Weights decide how much CPU a group gets; how soon a
// process that wakes up (a shell given a keystroke, the agent relaying it)
// gets a CPU held by a busy one is the scheduler's: EEVDF (Linux 6.6+)
// lets a waking task preempt the running one when its deadline is
// earlier, and a task's deadline is its slice away. Since Linux 6.12 a
// task may ask for its own slice (sched_setattr's sched_runtime, 0.1 to
// 100 ms; the default is sysctl base_slice, 0.75 ms × (1 + log2 CPUs)),
// and a cgroup's entity takes the shortest slice queued below it, so the
// short slice carries up through the environment's cgroups. The agent and
// interactive processes get the shortest, and workload processes a long
// one (they would otherwise inherit the short one from the agent or the
// shell that started them): a waking task with a shorter slice than the
// running one may preempt it at once (PREEMPT_SHORT), so a keystroke does
// not wait out a build's slice. Kernels before 6.12 accept the call and
// ignore the slice. What fairness gives each group is unchanged: a slice
// is more or fewer turns, not more CPU.

// Slice is the time slice a process gets when moved into g: 0 is the
// kernel's default.
func Slice(g Group) time.Duration {
	switch g {
	case Agent, Interactive:
		return ShortSlice
	case Workload:
		return WorkloadSlice
	}
	return 0
}

// ShortSlice is the shortest slice the kernel accepts; WorkloadSlice is
// the workload's.
const (
	ShortSlice    = 100 * time.Microsecond
	WorkloadSlice = 10 * time.Millisecond
)

// SetSlice sets the slice of every thread of process pid (0: the
// kernel's default). Threads it starts later inherit it, as do the
// processes it forks. A thread gone meanwhile is not an error.
func SetSlice(procRoot string, pid int, slice time.Duration) error {
	tasks, err := os.ReadDir(filepath.Join(procRoot, strconv.Itoa(pid), "task"))
	if err != nil {
		return err
	}
	var first error
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := setThreadSlice(tid, slice); err != nil && !isESRCH(err) && first == nil {
			first = err
		}
	}
	return first
}

func setThreadSlice(tid int, slice time.Duration) error {
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return fmt.Errorf("sched_getattr %d: %w", tid, err)
	}
	if attr.Policy != unix.SCHED_NORMAL && attr.Policy != unix.SCHED_BATCH {
		return nil // a real-time or idle policy is left alone
	}
	if attr.Runtime == uint64(slice.Nanoseconds()) && slice != 0 {
		return nil
	}
	attr.Runtime = uint64(slice.Nanoseconds())
	// The policy and nice value read are written back unchanged (the
	// kernel sets a fair task's slice with its nice value: no "keep"
	// flag), as is reset-on-fork; utilisation clamps are not touched.
	attr.Flags &= unix.SCHED_FLAG_RESET_ON_FORK
	if err := unix.SchedSetAttr(tid, attr, 0); err != nil {
		return fmt.Errorf("sched_setattr %d: %w", tid, err)
	}
	return nil
}
