package cli

import (
	"fmt"

	"github.com/covedev/cove/internal/runner"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// cpuControl is the runner's CPU control loop configuration from the
// flags (--cpu-control, --class-cpu-burst) for class, the default class
// they made; ok is false when the loop is off.
func cpuControl(o runnerOptions, class *covev1.EnvironmentClass) (c runner.CPUControl, ok bool, err error) {
	burst := o.classCPUBurst
	switch {
	case burst < 0:
		return c, false, fmt.Errorf("--class-cpu-burst %d: want a number of CPUs, or 0 for the whole host", burst)
	case burst > 0 && burst < class.GetCpus():
		return c, false, fmt.Errorf("--class-cpu-burst %d is below --class-cpus %d: an environment may always use its class's CPUs; raise it, or use 0 for the whole host", burst, class.GetCpus())
	case burst > 0 && !o.cpuControl:
		return c, false, fmt.Errorf("--class-cpu-burst needs the CPU control loop: drop --cpu-control=false")
	}
	if !o.cpuControl {
		return c, false, nil
	}
	return runner.CPUControl{CgroupParent: o.cgroupParent, Burst: map[string]int32{class.GetId(): burst}}, true, nil
}
