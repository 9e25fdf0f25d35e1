// Package cpucontrol decides, about once a second, how much CPU each
// environment on a runner may use. It is pure: it is given what each
// environment's cgroup counted (cumulative CPU time, throttled periods)
// and its class (a guarantee and a burst ceiling), and it returns a CFS
// quota and a weight per environment. Reading and writing cgroups is the
// caller's job (internal/resources), which keeps the algorithm testable
// with a fake clock and fake readings.
//
// The algorithm (docs/resources.md explains it for operators):
//
//   - Guarantee: each environment's class guarantee becomes its CPU weight
//     (cpu.shares on cgroup v1, cpu.weight on v2). When the guarantees add
//     up to more than the host's capacity they are all scaled down in
//     proportion, so the kernel can always honour them: under contention
//     every environment gets at least its (scaled) guarantee, at once,
//     without waiting for a tick.
//   - Base quota: an environment that is not bursting is capped at its base
//     quota: its guarantee, but at least MinQuota (so that a keystroke in a
//     nearly idle environment is never throttled) and at most its ceiling.
//   - Burst: an environment that was throttled during the last tick, or
//     that uses most of the extra quota it was given, is a burster. The
//     spare capacity (capacity less what non-bursters use and less what
//     bursters use within their guarantee) is divided among the bursters
//     in proportion to their guarantees (water-filling, each capped at its
//     ceiling). When a neighbour wakes, its usage shrinks the spare
//     capacity and the burster's quota shrinks at the next tick; meanwhile
//     the weights already give the neighbour its share.
//   - Budget: every environment has burst credit, earned while it uses
//     less than its guarantee and spent while it uses more, up to
//     CreditWindow worth of its guarantee. Bursters with credit are served
//     first; those without share only what is left. A long build keeps
//     using idle CPU, but it cannot starve a neighbour's burst forever.
//   - A counter that goes backwards (a restarted container) or a new
//     environment gives no rate for that tick: it is held at its base
//     quota and counted as using its whole guarantee.
//   - Reserve: in an environment whose processes are sorted into CPU
//     groups (internal/procgroups), the quota decided above goes on its
//     workload group, what burns CPU, and the environment's cgroup gets
//     that quota plus a small reserve, at most its ceiling (so the
//     workload gets the reserve less at the ceiling). The agent and the
//     terminals, outside workload, are then never throttled because the
//     build used the environment's quota up: a keystroke does not wait
//     for the next CFS period. They are still bounded, with everything
//     else, by the environment's quota: a process that makes itself look
//     interactive, or code injected into the agent, cannot take more than
//     the environment's quota and ceiling.
package cpucontrol

import (
	"cmp"
	"slices"
	"time"
)

// Millis are thousandths of a CPU (1000 = one CPU for the whole tick).
type Millis = int64

// Params are the loop's parameters; zero fields take the defaults below.
type Params struct {
	// Capacity is the host's CPU available to environments.
	Capacity Millis
	// MinQuota is the smallest base quota (default 1000: one CPU, or the
	// ceiling when that is less).
	MinQuota Millis
	// HoldFraction is how much of its extra quota a burster must use to
	// stay a burster without being throttled (default 0.8).
	HoldFraction float64
	// CreditWindow is the burst credit an environment may bank, as a time
	// at its guarantee (default 5 minutes).
	CreditWindow time.Duration
	// Reserve is the CPU an environment with groups keeps beyond its
	// workload's quota for its agent and terminals (default 200: a fifth
	// of a CPU), at most a tenth of its ceiling.
	Reserve Millis
}

// Defaults.
const (
	DefaultMinQuota     Millis = 1000
	DefaultHoldFraction        = 0.8
	DefaultCreditWindow        = 5 * time.Minute
	DefaultReserve      Millis = 200
	minQuota            Millis = 10 // the kernel's smallest quota is 1 ms per 100 ms period
)

func (p Params) withDefaults() Params {
	if p.MinQuota <= 0 {
		p.MinQuota = DefaultMinQuota
	}
	if p.HoldFraction <= 0 || p.HoldFraction > 1 {
		p.HoldFraction = DefaultHoldFraction
	}
	if p.CreditWindow <= 0 {
		p.CreditWindow = DefaultCreditWindow
	}
	if p.Reserve <= 0 {
		p.Reserve = DefaultReserve
	}
	return p
}

// Sample is what an environment's cgroup counted, and its class.
type Sample struct {
	ID string
	// Usage is the cgroup's cumulative CPU time.
	Usage time.Duration
	// NrThrottled is the cgroup's cumulative count of throttled periods.
	NrThrottled uint64
	// Guarantee is the class's guaranteed CPU; Ceiling the most it may
	// burst to (0: Capacity).
	Guarantee, Ceiling Millis
	// Groups: the environment's processes are sorted into CPU groups, and
	// its quota goes on the workload group (see Reserve).
	Groups bool
}

// Decision is the limits of one environment for the next tick.
type Decision struct {
	ID string
	// Quota is the CFS quota of the environment's cgroup, in Millis (the
	// caller converts to its period).
	Quota Millis
	// Workload is the quota of its workload group (0: it has no groups):
	// Quota less the reserve.
	Workload Millis
	// Weight is the guarantee after scaling to the host's capacity, the
	// value the cgroup's CPU weight is derived from.
	Weight Millis
	// Usage is the measured use over the last tick (-1: unknown, a new
	// environment or a counter reset).
	Usage Millis
	// Throttled reports throttling during the last tick; Burst that the
	// environment got more than its base quota; Credit is its burst
	// credit left.
	Throttled, Burst bool
	Credit           time.Duration
}

// Result is the outcome of a tick.
type Result struct {
	Decisions []Decision // in Sample order
	// Scaled reports that the guarantees added up to more than Capacity
	// (Requested) and were scaled down.
	Scaled    bool
	Requested Millis
	// Spare is the capacity that was divided among bursters.
	Spare Millis
}

type envState struct {
	usage     time.Duration
	throttled uint64
	quota     Millis
	credit    time.Duration
}

// Controller keeps what it needs between ticks. It is not safe for
// concurrent use.
type Controller struct {
	p    Params
	last time.Time
	envs map[string]*envState
}

// New returns a controller with parameters p.
func New(p Params) *Controller {
	return &Controller{p: p.withDefaults(), envs: map[string]*envState{}}
}

// env is the working data of one environment during a tick.
type env struct {
	s                  Sample
	st                 *envState
	known              bool // usage has a rate
	use                Millis
	g, ceil, base      Millis
	throttled, burster bool
	extra              Millis
}

// Tick decides the limits for samples (read at now). Environments not in
// samples are forgotten.
func (c *Controller) Tick(now time.Time, samples []Sample) Result {
	dt := now.Sub(c.last)
	first := c.last.IsZero() || dt <= 0
	if dt > 0 {
		c.last = now
	}
	capacity := max(c.p.Capacity, minQuota)
	res := Result{Decisions: make([]Decision, len(samples))}

	es := make([]*env, len(samples))
	seen := make(map[string]bool, len(samples))
	for i, s := range samples {
		seen[s.ID] = true
		e := &env{s: s, ceil: cmp.Or(s.Ceiling, capacity)}
		e.ceil = min(max(e.ceil, minQuota), capacity)
		e.g = min(max(s.Guarantee, 1), e.ceil)
		res.Requested += e.g
		st, ok := c.envs[s.ID]
		if !ok {
			st = &envState{}
			c.envs[s.ID] = st
		}
		if ok && !first && s.Usage >= st.usage && s.NrThrottled >= st.throttled {
			e.known = true
			e.use = Millis((s.Usage - st.usage) * 1000 / dt)
			e.throttled = s.NrThrottled > st.throttled
		}
		st.usage, st.throttled = s.Usage, s.NrThrottled
		e.st = st
		es[i] = e
	}
	for id := range c.envs {
		if !seen[id] {
			delete(c.envs, id)
		}
	}

	// Guarantees, scaled down to the capacity if need be.
	res.Scaled = res.Requested > capacity
	for _, e := range es {
		if res.Scaled {
			e.g = max(1, e.g*capacity/res.Requested)
		}
		e.base = min(max(e.g, c.p.MinQuota), e.ceil)
	}

	// Credit, and who bursts.
	for _, e := range es {
		window := time.Duration(e.g) * c.p.CreditWindow / 1000
		if e.st.quota == 0 { // new: its first build is what bursts are for
			e.st.credit = window
		}
		if e.known {
			e.st.credit += time.Duration(e.g-e.use) * dt / 1000
			e.st.credit = min(max(e.st.credit, 0), window)
		}
		extraGiven := e.st.quota - e.base
		e.burster = e.known && e.ceil > e.base &&
			(e.throttled || (extraGiven > 0 && float64(e.use-e.base) >= c.p.HoldFraction*float64(extraGiven)))
	}

	// Spare capacity: what nobody uses within their guarantee and
	// non-bursters do not use at all.
	spare := capacity
	for _, e := range es {
		switch {
		case !e.known:
			spare -= e.g
		case e.burster:
			spare -= min(e.use, e.g)
		default:
			spare -= e.use
		}
	}
	spare = max(spare, 0)
	res.Spare = spare

	// Bursters with credit first, then the others with what is left.
	var withCredit, without []*env
	for _, e := range es {
		if !e.burster {
			continue
		}
		if e.st.credit > 0 {
			withCredit = append(withCredit, e)
		} else {
			without = append(without, e)
		}
	}
	spare -= fill(spare, withCredit)
	fill(spare, without)

	for i, e := range es {
		q := e.base
		if e.burster {
			q = min(max(e.base, e.g+e.extra), e.ceil)
		}
		e.st.quota = q
		res.Decisions[i] = Decision{ID: e.s.ID, Quota: q, Weight: e.g, Usage: -1, Throttled: e.throttled,
			Burst: q > e.base, Credit: e.st.credit}
		if e.s.Groups {
			res.Decisions[i].Quota, res.Decisions[i].Workload = split(q, e.ceil, c.p.Reserve)
		}
		if e.known {
			res.Decisions[i].Usage = e.use
		}
	}
	return res
}

// split is the quota of an environment's cgroup and of its workload
// group when the loop decided q for it: the workload gets q and the
// environment q and the reserve, all within the ceiling; the reserve is at
// most a tenth of the ceiling.
func split(q, ceil, reserve Millis) (env, workload Millis) {
	r := min(reserve, ceil/10)
	env = min(q+r, ceil)
	return env, max(env-r, minQuota)
}

// fill divides spare among es in proportion to their guarantees, none
// getting more than its ceiling less its guarantee (water-filling): those
// who want less than their share get what they want, and the rest is
// shared again among the others. It sets each one's extra and returns
// what it handed out.
func fill(spare Millis, es []*env) Millis {
	open := slices.Clone(es)
	var given Millis
	for spare > 0 && len(open) > 0 {
		var weights Millis
		for _, e := range open {
			weights += e.g
		}
		round := spare
		var rest []*env
		for _, e := range open {
			if w := max(e.ceil-e.g, 0); w <= round*e.g/weights {
				e.extra = w
				spare -= w
				given += w
			} else {
				rest = append(rest, e)
			}
		}
		if len(rest) == len(open) {
			for _, e := range rest {
				e.extra = round * e.g / weights
				given += e.extra
			}
			break
		}
		open = rest
	}
	return given
}
