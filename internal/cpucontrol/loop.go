package cpucontrol

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"time"

	"github.com/covedev/cove/internal/resources"
)

// DefaultInterval is how often the runner's loop ticks.
const DefaultInterval = time.Second

// Env is an environment the loop controls: its cgroup and its class.
type Env struct {
	ID     string
	Cgroup string // a path like resources.CgroupPath returns
	// Guarantee and Ceiling are the class's (Ceiling 0: the host).
	Guarantee, Ceiling Millis
	// Workload is the CPU group of its dev container holding what burns
	// CPU (procgroups' "workload"), relative to Cgroup ("": it has no
	// groups). The environment's quota goes there, and its cgroup keeps a
	// reserve for the agent and terminals (Params.Reserve).
	Workload string
}

// Cgroups reads and writes environments' cgroups (*resources.CPUFiles).
type Cgroups interface {
	Read(p string) (resources.CPUStat, error)
	Set(p string, l resources.CPULimits) error
}

// Loop applies a Controller's decisions to environments' cgroups.
type Loop struct {
	Controller *Controller
	Cgroups    Cgroups
	// Envs lists the environments to control (the running ones).
	Envs func() []Env
	Now  func() time.Time // default time.Now
	Log  *slog.Logger

	applied map[string]resources.CPULimits // what each cgroup was last set to
	failing map[string]string              // the last error per environment, logged once
	scaled  bool
}

// Run ticks every interval until ctx is done; then it puts every
// environment it controlled back to its guarantee as a static quota (what
// its class gives without the loop).
func (l *Loop) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.Restore()
			return
		case <-t.C:
			l.Tick(ctx)
		}
	}
}

// Tick reads every environment's cgroup, decides and writes the limits
// that changed. An environment whose cgroup is gone (stopped meanwhile)
// is skipped.
func (l *Loop) Tick(ctx context.Context) Result {
	l.init()
	now := l.Now()
	envs := l.Envs()
	byID := make(map[string]Env, len(envs))
	samples := make([]Sample, 0, len(envs))
	for _, e := range envs {
		st, err := l.Cgroups.Read(e.Cgroup)
		if err != nil {
			l.fail(ctx, e.ID, "read", err)
			continue
		}
		byID[e.ID] = e
		samples = append(samples, Sample{ID: e.ID, Usage: st.Usage, NrThrottled: st.NrThrottled,
			Guarantee: e.Guarantee, Ceiling: e.Ceiling, Groups: e.Workload != ""})
	}
	res := l.Controller.Tick(now, samples)
	if res.Scaled != l.scaled {
		l.scaled = res.Scaled
		if res.Scaled {
			l.Log.WarnContext(ctx, "CPU guarantees of the environments exceed the host: all scaled down in proportion",
				"requestedMillis", res.Requested, "capacityMillis", l.Controller.p.Capacity)
		} else {
			l.Log.InfoContext(ctx, "CPU guarantees of the environments fit the host again",
				"requestedMillis", res.Requested, "capacityMillis", l.Controller.p.Capacity)
		}
	}
	seen := make(map[string]bool, len(res.Decisions))
	for _, d := range res.Decisions {
		seen[d.ID] = true
		lim := resources.CPULimits{QuotaMillis: d.Quota, WeightMillis: d.Weight}
		if d.Workload > 0 {
			lim.Workload, lim.WorkloadQuotaMillis = byID[d.ID].Workload, d.Workload
		}
		// Unknown usage: new, or its counters started again (a new
		// cgroup with the class's limits): write whatever was written.
		if prev, ok := l.applied[d.ID]; ok && prev == lim && d.Usage >= 0 {
			continue
		}
		if err := l.Cgroups.Set(byID[d.ID].Cgroup, lim); err != nil {
			// A workload group not made yet (the process groups
			// make it at their first look) is written next tick.
			l.fail(ctx, d.ID, "set", err)
			delete(l.applied, d.ID)
			continue
		}
		l.applied[d.ID] = lim
		delete(l.failing, d.ID)
		l.Log.DebugContext(ctx, "CPU limits changed", "env", d.ID, "quotaMillis", d.Quota, "workloadQuotaMillis", d.Workload, "weightMillis", d.Weight,
			"usageMillis", d.Usage, "throttled", d.Throttled, "burst", d.Burst, "credit", d.Credit,
			"spareMillis", res.Spare)
	}
	for id := range l.applied {
		if !seen[id] {
			delete(l.applied, id)
		}
	}
	listed := make(map[string]bool, len(envs))
	for _, e := range envs {
		listed[e.ID] = true
	}
	for id := range l.failing {
		if !listed[id] {
			delete(l.failing, id)
		}
	}
	return res
}

// Restore sets every environment's quota to its guarantee (its class's
// static quota) and forgets it.
func (l *Loop) Restore() {
	l.init()
	for _, e := range l.Envs() {
		if _, ok := l.applied[e.ID]; !ok {
			continue
		}
		if err := l.Cgroups.Set(e.Cgroup, resources.CPULimits{QuotaMillis: e.Guarantee}); err != nil && !errors.Is(err, fs.ErrNotExist) {
			l.Log.Warn("CPU limit not restored to the class's", "env", e.ID, "err", err)
		}
		delete(l.applied, e.ID)
	}
}

func (l *Loop) init() {
	if l.applied == nil {
		l.applied = map[string]resources.CPULimits{}
		l.failing = map[string]string{}
	}
	if l.Now == nil {
		l.Now = time.Now
	}
	if l.Log == nil {
		l.Log = slog.Default()
	}
}

// fail logs err for environment id: at debug level when its cgroup is
// gone (it stopped between the listing and the read), else once per
// distinct error.
func (l *Loop) fail(ctx context.Context, id, op string, err error) {
	if errors.Is(err, fs.ErrNotExist) {
		l.Log.DebugContext(ctx, "CPU control: cgroup gone or not made yet", "env", id, "op", op, "err", err)
		return
	}
	if l.failing[id] == err.Error() {
		return
	}
	l.failing[id] = err.Error()
	l.Log.WarnContext(ctx, "CPU control", "env", id, "op", op, "err", err)
}
