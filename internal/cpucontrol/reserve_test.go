package cpucontrol

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/covedev/cove/internal/resources"
)

// TestReserveKeptForAgentAndTerminals: an environment whose processes are
// in CPU groups gets the loop's quota on its workload group and that
// quota plus the reserve on its cgroup, within its ceiling, whatever it
// does: idle, bursting beside an idle neighbour, held to its guarantee
// beside a busy one.
func TestReserveKeptForAgentAndTerminals(t *testing.T) {
	h := newHost(t, Params{Capacity: 2000})
	a := h.add("a", 1000, 2000)
	b := h.add("b", 1000, 2000)
	a.groups, b.groups = true, true
	h.tick()
	want := func(what string, id string, quota, workload Millis) {
		t.Helper()
		if d := h.decision(id); d.Quota != quota || d.Workload != workload {
			t.Errorf("%s: %s's quota %d, workload %d; want %d, %d", what, id, d.Quota, d.Workload, quota, workload)
		}
	}
	want("new", "a", 1200, 1000)
	h.step(3)
	want("idle", "a", 1200, 1000)

	// make -j in a beside an idle b: the workload bursts to the ceiling
	// less the reserve; the environment's cgroup stays at its ceiling.
	a.demand = 4000
	h.step(3)
	want("bursting", "a", 2000, 1800)
	if a.used != 1800 {
		t.Errorf("a's build used %d, want its workload's 1800", a.used)
	}

	// b wakes: a comes back to its guarantee, with the reserve above it.
	b.demand = 4000
	h.step(3)
	want("beside a busy b", "a", 1200, 1000)
	want("beside a busy a", "b", 1200, 1000)
}

// TestReserveWithinSmallCeiling: a class that may not burst (ceiling =
// guarantee, 1 CPU) keeps its environment's cgroup at the ceiling; the
// reserve, a tenth of the ceiling at most, comes out of its workload.
func TestReserveWithinSmallCeiling(t *testing.T) {
	h := newHost(t, Params{Capacity: 8000})
	a := h.add("a", 1000, 1000)
	a.groups = true
	a.demand = 8000
	h.tick()
	h.step(3)
	if d := h.decision("a"); d.Quota != 1000 || d.Workload != 900 {
		t.Errorf("quota %d, workload %d; want the ceiling 1000 and 900", d.Quota, d.Workload)
	}
	// Without groups: the whole quota on the cgroup, as before.
	h2 := newHost(t, Params{Capacity: 8000})
	b := h2.add("b", 1000, 1000)
	b.demand = 8000
	h2.tick()
	h2.step(3)
	if d := h2.decision("b"); d.Quota != 1000 || d.Workload != 0 {
		t.Errorf("no groups: quota %d, workload %d; want 1000, 0", d.Quota, d.Workload)
	}
}

// TestSplitBounds: whatever the loop decided, the environment's cgroup
// never exceeds its ceiling, the workload never exceeds the
// environment's cgroup, and what is kept for the agent and terminals is
// the reserve at most.
func TestSplitBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		ceil := minQuota + r.Int64N(64000)
		q := minQuota + r.Int64N(ceil)
		q = min(q, ceil)
		reserve := 1 + r.Int64N(1000)
		env, work := split(q, ceil, reserve)
		if env > ceil || work > env || env-work > reserve || work < minQuota {
			t.Fatalf("split(%d, %d, %d) = %d, %d", q, ceil, reserve, env, work)
		}
		if q+min(reserve, ceil/10) <= ceil && (work != q || env != q+min(reserve, ceil/10)) {
			t.Fatalf("split(%d, %d, %d) = %d, %d: below the ceiling the workload gets q", q, ceil, reserve, env, work)
		}
	}
}

// groupsNotYet are cgroups whose workload group is not made yet: Set
// writes what it can and says the group is missing, as CPUFiles does.
type groupsNotYet struct {
	*fakeCgroups
	missing bool
}

func (g *groupsNotYet) Set(p string, l resources.CPULimits) error {
	if err := g.fakeCgroups.Set(p, l); err != nil {
		return err
	}
	if g.missing && l.Workload != "" {
		return fmt.Errorf("CPU group %s not there yet: %w", l.Workload, fs.ErrNotExist)
	}
	return nil
}

// TestLoopPutsQuotaOnWorkload: the loop hands the environment's workload
// group to the cgroups with its quota, and the environment's cgroup the
// quota plus the reserve; until the group exists it writes again every
// tick, and stops once it is written.
func TestLoopPutsQuotaOnWorkload(t *testing.T) {
	cg := &groupsNotYet{fakeCgroups: newFakeCgroups(), missing: true}
	envs := []Env{{ID: "a", Cgroup: "/cove/a", Guarantee: 500, Workload: "workload"}, {ID: "b", Cgroup: "/cove/b", Guarantee: 500}}
	cg.add("/cove/a", resources.CPUStat{})
	cg.add("/cove/b", resources.CPUStat{})
	var log bytes.Buffer
	l, clk := testLoop(cg, &envs, &log)
	wantA := resources.CPULimits{QuotaMillis: 700, WeightMillis: 500, Workload: "workload", WorkloadQuotaMillis: 500}
	for i := range 3 {
		before := cg.sets
		l.Tick(context.Background())
		if got := cg.limits["/cove/a"]; got != wantA {
			t.Fatalf("tick %d: a's limits %+v, want %+v", i, got, wantA)
		}
		if got := cg.limits["/cove/b"]; got != (resources.CPULimits{QuotaMillis: 500, WeightMillis: 500}) {
			t.Fatalf("tick %d: b (no groups): %+v", i, got)
		}
		if i > 0 && cg.sets-before != 1 {
			t.Fatalf("tick %d: %d writes, want a's again only", i, cg.sets-before)
		}
		clk.t = clk.t.Add(time.Second)
	}
	cg.missing = false
	l.Tick(context.Background())
	clk.t = clk.t.Add(time.Second)
	before := cg.sets
	l.Tick(context.Background())
	if cg.sets != before {
		t.Errorf("%d writes once the workload group was written", cg.sets-before)
	}
}
