package cpucontrol

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// host is a fake host: a fake clock and a fake kernel that runs each
// environment's demand within its quota, dividing the CPUs by weight
// under contention as CFS does, and keeps the cgroups' counters.
type host struct {
	t        *testing.T
	c        *Controller
	capacity Millis
	now      time.Time
	envs     map[string]*fakeEnv
	order    []string
	last     Result
}

type fakeEnv struct {
	guarantee, ceiling Millis
	demand             Millis // what its processes would use
	usage              time.Duration
	throttled          uint64
	quota, weight      Millis
	used               Millis // over the last tick
	// groups: its processes are in CPU groups; workload is its workload
	// group's quota, where its demand runs.
	groups   bool
	workload Millis
}

func newHost(t *testing.T, p Params) *host {
	return &host{t: t, c: New(p), capacity: p.Capacity, now: time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC),
		envs: map[string]*fakeEnv{}}
}

func (h *host) add(id string, guarantee, ceiling Millis) *fakeEnv {
	e := &fakeEnv{guarantee: guarantee, ceiling: ceiling}
	h.envs[id] = e
	h.order = append(h.order, id)
	return e
}

func (h *host) remove(id string) {
	delete(h.envs, id)
	for i, o := range h.order {
		if o == id {
			h.order = append(h.order[:i], h.order[i+1:]...)
			return
		}
	}
}

// run lets dt pass: each environment uses min(demand, quota), scaled down
// by weight when the host is short (with no quota yet: its guarantee).
func (h *host) run(dt time.Duration) {
	want := map[string]Millis{}
	var total Millis
	for _, id := range h.order {
		e := h.envs[id]
		q := e.quota
		if e.groups && e.workload > 0 {
			q = e.workload
		}
		if q == 0 {
			q = e.guarantee
		}
		want[id] = min(e.demand, q)
		total += want[id]
	}
	got := want
	if total > h.capacity {
		got = waterFill(h.capacity, h.order, want, func(id string) Millis { return max(h.envs[id].weight, 1) })
	}
	for _, id := range h.order {
		e := h.envs[id]
		e.used = got[id]
		e.usage += time.Duration(got[id]) * dt / 1000
		if q := cmp.Or(e.workload, e.quota); e.demand > q && q > 0 {
			e.throttled += uint64(dt / (100 * time.Millisecond))
		}
	}
	h.now = h.now.Add(dt)
}

// waterFill divides capacity by weight, no one getting more than it wants.
func waterFill(capacity Millis, ids []string, want map[string]Millis, weight func(string) Millis) map[string]Millis {
	got := map[string]Millis{}
	open := append([]string(nil), ids...)
	for capacity > 0 && len(open) > 0 {
		var ws Millis
		for _, id := range open {
			ws += weight(id)
		}
		var rest []string
		round := capacity
		for _, id := range open {
			if w := want[id] - got[id]; w <= round*weight(id)/ws {
				got[id] += w
				capacity -= w
			} else {
				rest = append(rest, id)
			}
		}
		if len(rest) == len(open) {
			for _, id := range rest {
				got[id] += round * weight(id) / ws
			}
			break
		}
		open = rest
	}
	return got
}

// tick runs the controller on the fake readings and applies its decisions.
func (h *host) tick() Result {
	h.t.Helper()
	var ss []Sample
	for _, id := range h.order {
		e := h.envs[id]
		ss = append(ss, Sample{ID: id, Usage: e.usage, NrThrottled: e.throttled, Guarantee: e.guarantee, Ceiling: e.ceiling,
			Groups: e.groups})
	}
	res := h.c.Tick(h.now, ss)
	var weights, extra Millis
	for i, d := range res.Decisions {
		if d.ID != h.order[i] {
			h.t.Fatalf("decision %d is for %s, sample for %s", i, d.ID, h.order[i])
		}
		e := h.envs[d.ID]
		e.quota, e.weight, e.workload = d.Quota, d.Weight, d.Workload
		weights += d.Weight
		if d.Quota > max(d.Weight, e.ceiling) && e.ceiling > 0 {
			h.t.Fatalf("%s: quota %d over its ceiling %d", d.ID, d.Quota, e.ceiling)
		}
		if e.groups != (d.Workload > 0) || d.Workload > d.Quota {
			h.t.Fatalf("%s (groups %v): quota %d, workload's %d", d.ID, e.groups, d.Quota, d.Workload)
		}
		if d.Burst {
			extra += cmp.Or(d.Workload, d.Quota) - max(d.Weight, h.c.p.MinQuota)
		}
	}
	// The invariants of every tick.
	if weights > h.capacity {
		h.t.Fatalf("guarantees %d oversubscribe the host's %d", weights, h.capacity)
	}
	if extra > res.Spare {
		h.t.Fatalf("bursts got %d, more than the spare %d", extra, res.Spare)
	}
	h.last = res
	return res
}

func (h *host) step(n int) {
	for range n {
		h.run(time.Second)
		h.tick()
	}
}

func (h *host) decision(id string) Decision {
	for _, d := range h.last.Decisions {
		if d.ID == id {
			return d
		}
	}
	h.t.Fatalf("no decision for %s", id)
	return Decision{}
}

// Two CPUs, two environments guaranteed half a CPU each (base quota half
// a CPU), bursting up to both CPUs.
func twoEnvs(t *testing.T, p Params) (*host, *fakeEnv, *fakeEnv) {
	p.Capacity = 2000
	if p.MinQuota == 0 {
		p.MinQuota = 500
	}
	h := newHost(t, p)
	a := h.add("a", 500, 2000)
	b := h.add("b", 500, 2000)
	h.tick()
	return h, a, b
}

func TestIdleEnvironmentGetsNothingExtra(t *testing.T) {
	h, a, b := twoEnvs(t, Params{})
	a.demand, b.demand = 5, 0 // an agent's heartbeat
	h.step(10)
	for _, id := range []string{"a", "b"} {
		d := h.decision(id)
		if d.Burst || d.Quota != 500 {
			t.Errorf("%s idle: quota %d, burst %v; want its base 500", id, d.Quota, d.Burst)
		}
	}
	if h.last.Spare == 0 {
		t.Error("an idle host has no spare capacity")
	}
}

func TestThrottledEnvironmentBurstsToCeiling(t *testing.T) {
	h, a, _ := twoEnvs(t, Params{})
	a.demand = 2000 // make -j on both CPUs; b idle
	h.step(1)
	if d := h.decision("a"); !d.Throttled || !d.Burst {
		t.Fatalf("after a throttled tick: %+v; want throttled and bursting", d)
	}
	h.step(2)
	if d := h.decision("a"); d.Quota != 2000 {
		t.Errorf("a bursting beside an idle neighbour: quota %d, want its ceiling 2000", d.Quota)
	}
	if a.used != 2000 {
		t.Errorf("a used %d, want both CPUs", a.used)
	}
	// It stays there while it uses it, though no longer throttled.
	a.demand = 1900
	h.step(3)
	if d := h.decision("a"); d.Quota != 2000 || d.Throttled {
		t.Errorf("a using most of its burst: %+v; want quota 2000, not throttled", d)
	}
	// And drops back when its build ends.
	a.demand = 10
	h.step(1)
	if d := h.decision("a"); d.Quota != 500 || d.Burst {
		t.Errorf("a idle again: %+v; want its base 500", d)
	}
}

func TestCeilingBelowHost(t *testing.T) {
	p := Params{Capacity: 4000, MinQuota: 500}
	h := newHost(t, p)
	a := h.add("a", 1000, 1500)
	h.add("b", 1000, 0) // 0: the whole host
	h.tick()
	a.demand = 4000
	h.step(3)
	if d := h.decision("a"); d.Quota != 1500 {
		t.Errorf("a's quota %d, want its ceiling 1500", d.Quota)
	}
}

func TestNeighbourWakesBursterReturnsToGuarantee(t *testing.T) {
	h, a, b := twoEnvs(t, Params{})
	a.demand = 2000
	h.step(3)
	if d := h.decision("a"); d.Quota != 2000 {
		t.Fatalf("a did not burst: %+v", d)
	}
	b.demand = 2000 // the neighbour starts its own build
	const n = 3
	back := -1
	for i := range n {
		h.step(1)
		if h.decision("a").Quota == 500 {
			back = i + 1
			break
		}
	}
	if back < 0 {
		t.Fatalf("a still at quota %d %d ticks after b woke", h.decision("a").Quota, n)
	}
	// b got its guarantee all along: the weights divide the host at once.
	if b.used < 500 {
		t.Errorf("b used %d while a burst, under its guarantee 500", b.used)
	}
	t.Logf("burster back to its guarantee after %d tick(s)", back)
}

func TestGuaranteesNeverOversubscribed(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 50 {
		capacity := Millis(1000 * (1 + r.IntN(16)))
		h := newHost(t, Params{Capacity: capacity})
		var requested Millis
		for i := range 1 + r.IntN(40) {
			g := Millis(100 * (1 + r.IntN(40)))
			requested += min(g, capacity)
			e := h.add(fmt.Sprintf("env%d", i), g, 0)
			e.demand = Millis(r.IntN(int(2 * capacity)))
		}
		h.tick()
		h.step(5) // tick checks the sum of weights every time
		if got := h.last.Scaled; got != (requested > capacity) {
			t.Errorf("trial %d: %d requested of %d: scaled %v", trial, requested, capacity, got)
		}
		if h.last.Requested != requested {
			t.Errorf("trial %d: requested %d, want %d", trial, h.last.Requested, requested)
		}
	}
}

func TestScaledGuaranteesKeepProportions(t *testing.T) {
	h := newHost(t, Params{Capacity: 2000})
	h.add("small", 1000, 0)
	h.add("big", 3000, 0)
	res := h.tick()
	if !res.Scaled || res.Requested != 3000 { // big is capped at the host
		t.Fatalf("result %+v", res)
	}
	s, b := h.decision("small").Weight, h.decision("big").Weight
	if s+b > 2000 || b-2*s > 1 || 2*s-b > 1 { // rounding down
		t.Errorf("weights small %d, big %d; want 1:2 within 2000", s, b)
	}
}

func TestNewAndRemovedEnvironments(t *testing.T) {
	h, a, _ := twoEnvs(t, Params{})
	a.demand = 2000
	h.step(3)
	c := h.add("c", 500, 2000)
	c.demand = 2000
	h.run(time.Second)
	h.tick()
	if d := h.decision("c"); d.Usage != -1 || d.Burst || d.Quota != 500 {
		t.Errorf("new environment's first tick: %+v; want unknown usage, base quota", d)
	}
	// Counted at its whole guarantee, it already shrinks a's burst.
	if d := h.decision("a"); d.Quota > 2000-500 {
		t.Errorf("a's quota %d leaves c no room", d.Quota)
	}
	h.step(1)
	if d := h.decision("c"); d.Usage < 0 || !d.Throttled {
		t.Errorf("c's second tick: %+v; want a measured, throttled usage", d)
	}
	h.remove("a")
	h.step(3)
	if d := h.decision("c"); d.Quota != 2000 {
		t.Errorf("c alone with an idle b: quota %d, want 2000", d.Quota)
	}
	if _, ok := h.c.envs["a"]; ok {
		t.Error("a removed but still remembered")
	}
}

func TestCounterReset(t *testing.T) {
	h, a, _ := twoEnvs(t, Params{})
	a.demand = 2000
	h.step(3)
	// The container restarted: a new cgroup, counters from zero.
	a.usage, a.throttled = 0, 0
	h.run(time.Second)
	h.tick()
	if d := h.decision("a"); d.Usage != -1 || d.Quota != 500 || d.Burst {
		t.Errorf("after a counter reset: %+v; want unknown usage, base quota", d)
	}
	h.step(1)
	if d := h.decision("a"); d.Usage <= 0 || !d.Burst {
		t.Errorf("a tick after the reset: %+v; want measured and bursting again", d)
	}
}

func TestRatesUseElapsedTime(t *testing.T) {
	h, a, _ := twoEnvs(t, Params{})
	a.demand = 400
	h.run(3 * time.Second) // a late tick
	h.tick()
	if d := h.decision("a"); d.Usage != 400 {
		t.Errorf("usage over 3 s: %d, want 400", d.Usage)
	}
	// The same instant again (a clock that did not move): no rates.
	h.tick()
	if d := h.decision("a"); d.Usage != -1 {
		t.Errorf("usage over no time: %d, want unknown", d.Usage)
	}
}

// TestLongBuildCannotStarveNeighbourBurst: a environment that burst until
// its credit ran out yields the spare capacity to a neighbour that starts
// bursting with credit, and shares it again once both are out of credit.
func TestLongBuildCannotStarveNeighbourBurst(t *testing.T) {
	h, a, b := twoEnvs(t, Params{CreditWindow: 10 * time.Second})
	a.demand = 2000
	h.step(30)
	if d := h.decision("a"); d.Credit != 0 || d.Quota != 2000 {
		t.Fatalf("after a long build beside an idle host: %+v; want no credit, still the whole host", d)
	}
	b.demand = 2000
	h.step(3)
	da, db := h.decision("a"), h.decision("b")
	if db.Credit == 0 || da.Quota != 500 || db.Quota != 2000-500 {
		t.Errorf("b starts bursting: a %+v, b %+v; want b (with credit) to get all but a's guarantee, a its base", da, db)
	}
	if b.used <= a.used {
		t.Errorf("b used %d, a %d: the fresh burst did not win", b.used, a.used)
	}
	h.step(60)
	da, db = h.decision("a"), h.decision("b")
	if db.Credit != 0 || da.Quota != db.Quota || da.Quota <= 500 {
		t.Errorf("both out of credit: a %+v, b %+v; want equal bursts", da, db)
	}
}
