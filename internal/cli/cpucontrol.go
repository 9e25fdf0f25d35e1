package cli

import (
	"fmt"
	"math"
	"strings"

	"github.com/covedev/cove/internal/runner"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/pflag"
)

// runnerClasses are the classes the runner offers: those of --classes
// FILE, each with its whole resource definition, or else the one class
// "default" that the --class-* flags define. The two do not mix: with a
// file, a --class-* flag is refused rather than silently ignored.
func runnerClasses(o runnerOptions) ([]*covev1.EnvironmentClass, error) {
	if o.classesFile == "" {
		return []*covev1.EnvironmentClass{defaultClass(o)}, nil
	}
	if set := changedClassFlags(o.flags); len(set) > 0 {
		return nil, fmt.Errorf("--classes %s defines every class: drop --%s (set it in the file; see docs/runners.md#classes)", o.classesFile, strings.Join(set, ", --"))
	}
	return runner.LoadClasses(o.classesFile)
}

// changedClassFlags are the --class-* flags set on the command line.
func changedClassFlags(f *pflag.FlagSet) []string {
	var set []string
	if f == nil {
		return nil
	}
	f.Visit(func(fl *pflag.Flag) {
		if strings.HasPrefix(fl.Name, "class-") {
			set = append(set, fl.Name)
		}
	})
	return set
}

// cpuControl is the runner's CPU control loop configuration from the
// flags (--cpu-control, and --class-cpu-burst for the default class) for
// the classes the runner offers; ok is false when the loop is off.
func cpuControl(o runnerOptions, classes []*covev1.EnvironmentClass) (c runner.CPUControl, ok bool, err error) {
	if o.classesFile == "" && len(classes) == 1 {
		// The default class, from the flags: errors name the flags.
		burst, cpus := o.classCPUBurst, classes[0].GetCpus()
		switch {
		case burst < 0:
			return c, false, fmt.Errorf("--class-cpu-burst %d: want a number of CPUs, or 0 for the whole host", burst)
		case burst > 0 && burst < cpus:
			return c, false, fmt.Errorf("--class-cpu-burst %d is below --class-cpus %d: an environment may always use its class's CPUs; raise it, or use 0 for the whole host", burst, cpus)
		case burst > 0 && !o.cpuControl:
			return c, false, fmt.Errorf("--class-cpu-burst needs the CPU control loop: drop --cpu-control=false")
		}
	}
	if !o.cpuControl {
		for _, cl := range classes {
			if cl.GetCpuBurst() > 0 {
				return c, false, fmt.Errorf("class %s sets cpuBurst %d, which needs the CPU control loop: drop --cpu-control=false, or the class's cpuBurst", cl.GetId(), cl.GetCpuBurst())
			}
		}
		return c, false, nil
	}
	return runner.CPUControl{CgroupParent: o.cgroupParent, ProcessGroups: o.processGroups}, true, nil
}

// int64Rate is a --class-io-* flag's rate as the class carries it.
func int64Rate(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// buildLimits are the limits of the builder's work cgroup from the
// --build-* flags.
func buildLimits(o runnerOptions) *runner.WorkLimits { return workLimits(o.buildCPUs, o.buildLimits) }

// unpackLimits are the limits of the image unpacker's work cgroup from
// the --unpack-* flags.
func unpackLimits(o runnerOptions) *runner.WorkLimits {
	return workLimits(o.unpackCPUs, o.unpackLimits)
}

// workLimits are l with cpus CPUs, negative figures meaning no limit.
func workLimits(cpus float64, l runner.WorkLimits) *runner.WorkLimits {
	l.CPUMillis = int64(math.Round(max(cpus, 0) * 1000))
	l.MemoryBytes, l.Pids = max(l.MemoryBytes, 0), max(l.Pids, 0)
	return &l
}
