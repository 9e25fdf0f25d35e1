package resources

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// CPUPeriod is the CFS period, in microseconds, of the CPU limits this
// package sets.
const CPUPeriod = 100_000

// limitControllers are the controllers Create sets limits with.
var limitControllers = []string{"cpu", "memory", "pids", "io"}

// Limits are the limits of a cgroup. A zero field means unlimited.
type Limits struct {
	CPUMillis   int64 // 1000 = one CPU
	MemoryBytes int64
	Pids        int64
	// MemoryHighBytes, SwapBytes and IO: see memio.go.
	MemoryHighBytes int64      // reclaim target
	SwapBytes       int64      // swap beyond MemoryBytes; NoSwap: none
	IO              []DeviceIO // block IO limits per device
}

// Create creates the cgroup at p (a path like CgroupPath returns) in every
// hierarchy if it does not exist yet, and sets its limits to l, lifting
// those l leaves unlimited. It is meant for cgroups that hold other cgroups
// rather than processes: on cgroup v2 the cpu, memory and pids controllers
// are enabled for p's children (and on the way to p), as the "no internal
// processes" rule allows only for cgroups without processes of their own.
func Create(p string, l Limits) error {
	if p == "" || filepath.Clean("/"+p) == "/" {
		return errors.New("create cgroup: refusing to change the root cgroup")
	}
	var err error
	switch cgroups.Mode() {
	case cgroups.Unified:
		err = createV2(cgroupRoot, p, l)
	case cgroups.Legacy, cgroups.Hybrid:
		// On hybrid hosts the controllers are all on v1; the empty unified
		// hierarchy only tracks processes, and runc creates the directories
		// it needs there.
		err = createV1(p, l)
	default:
		err = errors.New("no cgroup hierarchy mounted")
	}
	if err != nil {
		return fmt.Errorf("create cgroup %s: %w", p, err)
	}
	return nil
}

func createV1(p string, l Limits) error {
	quota, mem := int64(-1), int64(-1) // -1: unlimited
	if l.CPUMillis > 0 {
		quota = l.CPUMillis * CPUPeriod / 1000
	}
	if l.MemoryBytes > 0 {
		mem = l.MemoryBytes
	}
	res := &specs.LinuxResources{
		CPU:    &specs.LinuxCPU{Period: ptr(uint64(CPUPeriod)), Quota: &quota},
		Memory: &specs.LinuxMemory{Limit: &mem},
	}
	if l.Pids > 0 {
		res.Pids = &specs.LinuxPids{Limit: ptr(l.Pids)}
	}
	if err := memIOV1(p, res, l); err != nil {
		return err
	}
	// cgroup1.New creates the directories that are missing and writes the
	// limits whether or not they existed.
	cg, err := cgroup1.New(cgroup1.StaticPath(p), res)
	if err != nil {
		return err
	}
	if l.Pids > 0 {
		return nil
	}
	// cgroups only ever writes positive pids limits.
	for _, s := range cg.Subsystems() {
		if s.Name() != cgroup1.Pids {
			continue
		}
		if ps, ok := s.(interface{ Path(string) string }); ok {
			if err := os.WriteFile(filepath.Join(ps.Path(p), "pids.max"), []byte("max"), 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// createV2 creates p under the cgroup v2 hierarchy at mountpoint.
func createV2(mountpoint, p string, l Limits) error {
	avail, err := readControllers(mountpoint)
	if err != nil {
		return err
	}
	has := func(c string, limited bool) (bool, error) {
		switch {
		case slices.Contains(avail, c):
			return true, nil
		case limited:
			return false, fmt.Errorf("%s controller not available", c)
		}
		return false, nil
	}
	res := &cgroup2.Resources{}
	if ok, err := has("cpu", l.CPUMillis > 0); err != nil {
		return err
	} else if ok {
		var quota *int64 // nil: "max"
		if l.CPUMillis > 0 {
			quota = ptr(l.CPUMillis * CPUPeriod / 1000)
		}
		res.CPU = &cgroup2.CPU{Max: cgroup2.NewCPUMax(quota, ptr(uint64(CPUPeriod)))}
	}
	if ok, err := has("memory", l.MemoryBytes > 0); err != nil {
		return err
	} else if ok {
		// The kernel caps larger values at its maximum, shown as "max".
		limit := int64(math.MaxInt64)
		if l.MemoryBytes > 0 {
			limit = l.MemoryBytes
		}
		res.Memory = &cgroup2.Memory{Max: &limit}
		memIOV2(res, l)
	}
	ioOK, err := has("io", l.hasIO())
	if err != nil {
		return err
	} else if ioOK {
		res.IO = &cgroup2.IO{} // enabled on the way; io.max is written by applyV2
	}
	if ok, err := has("pids", l.Pids > 0); err != nil {
		return err
	} else if ok {
		res.Pids = &cgroup2.Pids{Max: -1} // -1: "max"
		if l.Pids > 0 {
			res.Pids.Max = l.Pids
		}
	}
	// NewManager creates what is missing, enables the controllers of res in
	// the ancestors' subtree_control and writes the limits.
	if _, err := cgroup2.NewManager(mountpoint, p, res); err != nil {
		return err
	}
	dir := filepath.Join(mountpoint, p)
	if err := applyV2(dir, l, ioOK); err != nil {
		return err
	}
	// The members below p are accounted by the same controllers.
	own, err := readControllers(dir)
	if err != nil {
		return err
	}
	var enable []string
	for _, c := range limitControllers {
		if slices.Contains(own, c) {
			enable = append(enable, "+"+c)
		}
	}
	if len(enable) == 0 {
		return nil
	}
	f := filepath.Join(dir, "cgroup.subtree_control")
	if err := os.WriteFile(f, []byte(strings.Join(enable, " ")), 0); err != nil {
		return fmt.Errorf("enable controllers for children: %w", err)
	}
	return nil
}

func readControllers(dir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

func ptr[T any](v T) *T { return &v }
