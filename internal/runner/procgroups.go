package runner

import (
	"context"
	"path"
	"sync"
	"time"

	"github.com/covedev/cove/internal/procgroups"
	"github.com/covedev/cove/internal/resources"
)

// Process groups (internal/procgroups, docs/resources.md): about once a
// second the runner sorts the processes of every running environment's
// dev container into CPU groups below its cgroup — the agent, terminal
// sessions, and the rest as workload, where a terminal's job that burns
// CPU moves too — so a build typed in a terminal does not make that
// terminal lag. `cove runner` starts it (--process-groups, on by default).

// StartProcessGroups starts sorting the processes of the environments
// below cgroupParent until ctx is done, and returns a function that waits
// for it to stop.
// A terminal job that uses more than demoteShare of a CPU is demoted
// (0: procgroups.DefaultParams).
func (r *Runner) StartProcessGroups(ctx context.Context, cgroupParent string, demoteShare float64) (stop func()) {
	if cgroupParent == "" {
		return func() {}
	}
	files, err := procgroups.HostFiles()
	if err != nil {
		r.log.Warn("process groups off: an environment's processes share its CPU evenly", "err", err)
		return func() {}
	}
	l := &procgroups.Loop{
		Cgroups: files,
		Envs:    func() []procgroups.Env { return r.procEnvs(files, cgroupParent) },
		Log:     r.log.With("component", "procgroups"),
		Params:  procgroups.DefaultParams,
		SetSlice: func(pid int, slice time.Duration) error {
			return procgroups.SetSlice("/proc", pid, slice)
		},
	}
	if demoteShare > 0 {
		l.Params.DemoteShare = demoteShare
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); l.Run(ctx, procgroups.DefaultInterval) }()
	r.log.Info("process groups on", "interval", procgroups.DefaultInterval, "demoteShare", l.Params.DemoteShare)
	return func() { cancel(); wg.Wait() }
}

// procEnvs are the running environments with their dev containers'
// cgroups: the environment's own, or for a Compose environment its dev
// container's below it (the dev container has the environment's id).
func (r *Runner) procEnvs(files *procgroups.Files, parent string) []procgroups.Env {
	var out []procgroups.Env
	for _, w := range r.workerList() { // usage.go
		if !w.isRunning() {
			continue
		}
		cg := resources.CgroupPath(parent, w.id)
		if member := path.Join(cg, w.id); files.Exists(member) {
			cg = member
		}
		out = append(out, procgroups.Env{ID: w.id, Cgroup: cg})
	}
	return out
}
