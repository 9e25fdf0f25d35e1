package runner

import (
	"context"
	goruntime "runtime"
	"sync"

	"github.com/covedev/cove/internal/cpucontrol"
	"github.com/covedev/cove/internal/procgroups"
	"github.com/covedev/cove/internal/resources"
)

// The CPU control loop (internal/cpucontrol, docs/resources.md): about
// once a second it reads the cgroup of every running environment
// (<cgroup parent>/<environment id>, all its containers below it) and sets
// its CFS quota and weight: each environment is guaranteed its class's
// CPUs (scaled down in proportion when the classes promise more than the
// host has) and may burst, up to the whole host, into what the others
// leave idle. With process groups on, the quota goes on each dev
// container's workload group and the environment's cgroup keeps a reserve
// for its agent and terminals (cpucontrol.Params.Reserve). `cove runner`
// starts it (--cpu-control, on by default).

// CPUControl configures the CPU control loop.
type CPUControl struct {
	// CgroupParent is the runtime's cgroup parent, which environments'
	// cgroups are below.
	CgroupParent string
	// ProcessGroups: the process groups are on (StartProcessGroups), so
	// dev containers have a workload group for the quota.
	ProcessGroups bool
}

// StartCPUControl starts the loop over the environments' cgroups until
// ctx is done, and returns a function that waits for it to stop. Stopping
// puts every environment back to its class's static quota.
func (r *Runner) StartCPUControl(ctx context.Context, c CPUControl) (stop func()) {
	if c.CgroupParent == "" {
		return func() {}
	}
	files, err := resources.HostCPUFiles()
	if err != nil {
		r.log.Warn("CPU control loop off: environments keep their classes' static CPU limits", "err", err)
		return func() {}
	}
	l := r.cpuLoop(files, c, goruntime.NumCPU())
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); l.Run(ctx, cpucontrol.DefaultInterval) }()
	r.log.Info("CPU control loop on", "interval", cpucontrol.DefaultInterval, "hostCPUs", goruntime.NumCPU())
	return func() { cancel(); wg.Wait() }
}

// cpuLoop is the loop over this runner's environments on a host of ncpu
// CPUs, reading and writing cgroups through cg.
func (r *Runner) cpuLoop(cg cpucontrol.Cgroups, c CPUControl, ncpu int) *cpucontrol.Loop {
	return &cpucontrol.Loop{
		Controller: cpucontrol.New(cpucontrol.Params{Capacity: int64(ncpu) * 1000}),
		Cgroups:    cg,
		Envs:       func() []cpucontrol.Env { return r.cpuEnvs(c) },
		Log:        r.log.With("component", "cpucontrol"),
	}
}

// cpuEnvs are the running environments with their classes' guarantees
// and burst ceilings.
func (r *Runner) cpuEnvs(cc CPUControl) []cpucontrol.Env {
	var out []cpucontrol.Env
	for _, w := range r.workerList() { // usage.go
		if !w.isRunning() {
			continue
		}
		c := r.classes.find(w.latest().GetSpec().GetClassId())
		if c == nil || c.GetCpus() <= 0 {
			continue // no CPU limit to manage
		}
		e := cpucontrol.Env{ID: w.id, Cgroup: resources.CgroupPath(cc.CgroupParent, w.id),
			Guarantee: int64(c.GetCpus()) * 1000, Ceiling: int64(c.GetCpuBurst()) * 1000} // burst 0: the whole host
		if cc.ProcessGroups {
			// Below the environment's cgroup, or its Compose dev
			// container's: resources finds it.
			e.Workload = string(procgroups.Workload)
		}
		out = append(out, e)
	}
	return out
}
