package runner

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/resources"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// memCgroups are cgroups in memory: what the loop wrote, by path.
type memCgroups struct {
	mu    sync.Mutex
	set   map[string]resources.CPULimits
	has   map[string]bool
	stats map[string]resources.CPUStat
}

func (m *memCgroups) Read(p string) (resources.CPUStat, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.has[p] {
		return resources.CPUStat{}, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	}
	return m.stats[p], nil
}

func (m *memCgroups) Set(p string, l resources.CPULimits) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.set[p] = l
	return nil
}

// TestCPULoopControlsRunningEnvironments: the loop controls the running
// environments' cgroups below the cgroup parent with their classes'
// guarantees, and leaves stopped ones and classes without a CPU limit
// alone.
func TestCPULoopControlsRunningEnvironments(t *testing.T) {
	r := &Runner{log: slog.Default(), workers: map[string]*worker{},
		classes: classes{{Id: "small", Cpus: 1, CpuBurst: 2}, {Id: "big", Cpus: 4}, {Id: "free"}}}
	for _, e := range []struct {
		id, class string
		running   bool
	}{{"e1", "small", true}, {"e2", "big", true}, {"e3", "small", false}, {"e4", "free", true}, {"e5", "gone", true}} {
		r.workers[e.id] = &worker{id: e.id, running: e.running,
			env: &covev1.Environment{Id: e.id, Spec: &covev1.EnvironmentSpec{ClassId: e.class}}}
	}
	cg := &memCgroups{set: map[string]resources.CPULimits{}, has: map[string]bool{}, stats: map[string]resources.CPUStat{}}
	for _, id := range []string{"e1", "e2", "e3", "e4", "e5"} {
		cg.has[resources.CgroupPath("cove", id)] = true
	}
	l := r.cpuLoop(cg, CPUControl{CgroupParent: "cove"}, 8)
	now := time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)
	l.Now = func() time.Time { return now }
	l.Tick(context.Background())
	want := map[string]resources.CPULimits{
		"/cove/e1": {QuotaMillis: 1000, WeightMillis: 1000},
		"/cove/e2": {QuotaMillis: 4000, WeightMillis: 4000},
	}
	if len(cg.set) != len(want) {
		t.Errorf("limits set: %v; want %v", cg.set, want)
	}
	for p, w := range want {
		if got := cg.set[p]; got != w {
			t.Errorf("%s: %+v, want %+v", p, got, w)
		}
	}
	// e1 throttled for a second on an idle host of 8 CPUs: it bursts to
	// its class's ceiling of 2 CPUs, not to the host.
	now = now.Add(time.Second)
	cg.stats["/cove/e1"] = resources.CPUStat{Usage: time.Second, NrThrottled: 10}
	l.Tick(context.Background())
	if got := cg.set["/cove/e1"].QuotaMillis; got != 2000 {
		t.Errorf("e1's burst: quota %d, want its class's ceiling 2000", got)
	}
}

// TestCPULoopQuotaOnWorkloadWithProcessGroups: with the process groups
// on, the loop puts an environment's quota on its workload group and the
// quota plus the reserve on its cgroup (1 CPU class on 8 CPUs: 1000 and
// 1200 millis); with them off, the quota on its cgroup alone.
func TestCPULoopQuotaOnWorkloadWithProcessGroups(t *testing.T) {
	for _, groups := range []bool{true, false} {
		r := &Runner{log: slog.Default(), workers: map[string]*worker{}, classes: classes{{Id: "small", Cpus: 1}}}
		r.workers["e1"] = &worker{id: "e1", running: true,
			env: &covev1.Environment{Id: "e1", Spec: &covev1.EnvironmentSpec{ClassId: "small"}}}
		cg := &memCgroups{set: map[string]resources.CPULimits{}, has: map[string]bool{"/cove/e1": true}, stats: map[string]resources.CPUStat{}}
		l := r.cpuLoop(cg, CPUControl{CgroupParent: "cove", ProcessGroups: groups}, 8)
		l.Tick(context.Background())
		want := resources.CPULimits{QuotaMillis: 1000, WeightMillis: 1000}
		if groups {
			want = resources.CPULimits{QuotaMillis: 1200, WeightMillis: 1000, Workload: "workload", WorkloadQuotaMillis: 1000}
		}
		if got := cg.set["/cove/e1"]; got != want {
			t.Errorf("process groups %v: %+v, want %+v", groups, got, want)
		}
	}
}
