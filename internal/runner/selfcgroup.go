package runner

import (
	"context"
	"sync"
	"time"

	"github.com/covedev/cove/internal/resources"
)

// The runner's own cgroup (resources.EnterRunnerCgroup): the runner
// process — SSH gateway, port proxy, control loops, and in `cove up` the
// server too — runs in <cgroup parent>.runner, next to the environments'
// parent, with a high CPU weight (Config.RunnerCPUWeight,
// `--runner-cpu-weight`), weighed against the environments as systemd
// weighs system.slice against machine.slice: a keystroke crossing the
// gateway waits less behind the environments' builds. What the runner
// starts (git, runc, mkfs, buildkitd, the unpack and backup children) is
// started in the cgroup the runner came from (resources.StartChild) and
// goes where it went before: containers and work cgroups are unchanged.

// DefaultRunnerCPUWeight is the runner cgroup's default CPU weight, on
// cgroup v2's scale (100 is the kernel's default; v1 cpu.shares = weight
// × 1024 / 100): ten times a default cgroup's, as the agent's group has
// inside an environment.
const DefaultRunnerCPUWeight = 1000

// enterSelfCgroup moves the runner into its own cgroup, when configured,
// and returns what takes it out again (idempotent). A runner that cannot
// (no cpu controller delegated on v2, say) runs where it is, with a
// warning.
func (r *Runner) enterSelfCgroup() (leave func()) {
	w := r.cfg.RunnerCPUWeight
	if w <= 0 || r.cfg.CgroupParent == "" {
		return func() {}
	}
	s, err := resources.EnterRunnerCgroup(r.cfg.CgroupParent, w)
	if err != nil {
		r.log.Warn("the runner runs without a CPU weight of its own", "err", err)
		return func() {}
	}
	s.Warn = func(err error) { r.log.Warn("runner cgroup", "err", err) }
	r.log.Info("runner cgroup entered", "cgroup", s.Path(), "cpuWeight", w, "childrenIn", s.Home())
	var once sync.Once
	return func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.Leave(ctx); err != nil {
				r.log.Warn("runner cgroup not removed", "err", err)
			}
		})
	}
}
