package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

// The targets for an idle environment.
const (
	targetCPUPercent = 0.1 // % of one CPU
	targetMiB        = 10
	targetStartRatio = 1.5 // N-th start / first start
)

// pct is d as a percentage of one CPU over window.
func pct(d, window time.Duration) float64 { return 100 * float64(d) / float64(window) }

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func sum[T time.Duration | int64](xs []T) T {
	var t T
	for _, x := range xs {
		t += x
	}
	return t
}

func mems(ms []benchkit.Memory, f func(benchkit.Memory) int64) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = f(m)
	}
	return out
}

func printReport(w io.Writer, m benchkit.Machine, o options, r result) {
	n := len(r.envs)
	fmt.Fprintf(w, "cove density benchmark, %s\n", m.When.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "machine: %d CPUs (%s), kernel %s, %s, cgroups %s\n", m.CPUs, m.CPUModel, m.Kernel, m.Runc, m.Cgroups)
	fmt.Fprintf(w, "load:    %s at start, %s at end (1/5/15 min)\n", m.LoadStart, m.LoadEnd)
	fmt.Fprintf(w, "%d idle environments (busybox, agent running, no session), %d bare runc containers running sleep;\n", n, len(r.runc))
	fmt.Fprintf(w, "CPU measured over %.1f s after %s of settling; only their cgroups and the cove up process are measured\n\n", r.window.Seconds(), o.settle)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "per idle environment\t%10s\t%10s\ttarget\t\n", "mean", "max")
	envCPU := pct(sum(r.envCPU), r.window) / float64(n)
	runnerCPU := pct(r.runnerCPU, r.window) / float64(n)
	childCPU := pct(r.childCPU, r.window) / float64(n)
	fmt.Fprintf(tw, "CPU, environment's cgroup (%% of one CPU)\t%8.4f%%\t%8.4f%%\t\t\n", envCPU, pct(slices.Max(r.envCPU), r.window))
	fmt.Fprintf(tw, "CPU, cove up process / N\t%8.4f%%\t\t\t\n", runnerCPU)
	fmt.Fprintf(tw, "CPU, cove up's child processes (runc …) / N\t%8.4f%%\t\t\t\n", childCPU)
	fmt.Fprintf(tw, "CPU, total\t%8.4f%%\t\t< %.1f%%\t\n", envCPU+runnerCPU+childCPU, targetCPUPercent)
	usage := mems(r.envMem, func(m benchkit.Memory) int64 { return m.Usage })
	anon := mems(r.envMem, func(m benchkit.Memory) int64 { return m.Anon })
	file := mems(r.envMem, func(m benchkit.Memory) int64 { return m.File })
	growth := float64(r.runnerRSSGrowth) / float64(n)
	fmt.Fprintf(tw, "memory, environment's cgroup (all charged)\t%6.1f MiB\t%6.1f MiB\t\t\n", mib(sum(usage))/float64(n), mib(slices.Max(usage)))
	fmt.Fprintf(tw, "  of which anonymous (heaps, stacks)\t%6.1f MiB\t%6.1f MiB\t\t\n", mib(sum(anon))/float64(n), mib(slices.Max(anon)))
	fmt.Fprintf(tw, "  of which page cache\t%6.1f MiB\t%6.1f MiB\t\t\n", mib(sum(file))/float64(n), mib(slices.Max(file)))
	fmt.Fprintf(tw, "memory, cove up RSS growth / N\t%6.2f MiB\t\t\t\n", mib(int64(growth)))
	fmt.Fprintf(tw, "memory, total\t%6.1f MiB\t\t< %d MiB\t\n", mib(sum(usage))/float64(n)+mib(int64(growth)), targetMiB)
	fmt.Fprintf(tw, "\t\t\t\t\n")
	if len(r.runc) > 0 {
		rn := float64(len(r.runc))
		rUsage := mems(r.runcMem, func(m benchkit.Memory) int64 { return m.Usage })
		rAnon := mems(r.runcMem, func(m benchkit.Memory) int64 { return m.Anon })
		fmt.Fprintf(tw, "baseline: per bare runc container (sleep)\t\t\t\t\n")
		fmt.Fprintf(tw, "CPU, container's cgroup\t%8.4f%%\t%8.4f%%\t\t\n", pct(sum(r.runcCPU), r.window)/rn, pct(slices.Max(r.runcCPU), r.window))
		fmt.Fprintf(tw, "memory, container's cgroup (all charged)\t%6.1f MiB\t%6.1f MiB\t\t\n", mib(sum(rUsage))/rn, mib(slices.Max(rUsage)))
		fmt.Fprintf(tw, "  of which anonymous\t%6.1f MiB\t%6.1f MiB\t\t\n", mib(sum(rAnon))/rn, mib(slices.Max(rAnon)))
		fmt.Fprintf(tw, "\t\t\t\t\n")
	}
	fmt.Fprintf(tw, "cove up process: CPU over the window, RSS at the end\t%8.2f%%\t%6.0f MiB\t\t\n", pct(r.runnerCPU, r.window), mib(r.runnerRSS))
	fmt.Fprintf(tw, "cove up's child processes: CPU over the window\t%8.2f%%\t\t\t\n", pct(r.childCPU, r.window))
	perEnv := func(a, b int) string { return fmt.Sprintf("%10.2f", float64(b-a)/float64(n)) }
	fmt.Fprintf(tw, "runner goroutines per environment (before → after)\t%s\t%10s\t\t\n", perEnv(r.host0.goroutines, r.host1.goroutines), fmt.Sprintf("%d → %d", r.host0.goroutines, r.host1.goroutines))
	fmt.Fprintf(tw, "nftables rules per environment (before → after)\t%s\t%10s\t\t\n", perEnv(r.host0.rules, r.host1.rules), fmt.Sprintf("%d → %d", r.host0.rules, r.host1.rules))
	_ = tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	first, last := r.envs[0], r.envs[n-1]
	fmt.Fprintf(tw, "start time\t%10s\t%10s\t%10s\ttarget\t\n", "first", "N-th", "N-th/first")
	ratio := func(a, b time.Duration) string { return fmt.Sprintf("%9.2fx", float64(b)/float64(a)) }
	fmt.Fprintf(tw, "create → RUNNING seen\t%s\t%s\t%s\t≤ %.1fx\t\n", benchkit.Ms(first.start), benchkit.Ms(last.start), ratio(first.start, last.start), targetStartRatio)
	fmt.Fprintf(tw, "create → first command over SSH\t%s\t%s\t%s\t\t\n", benchkit.Ms(first.first), benchkit.Ms(last.first), ratio(first.first, last.first))
	if k := min(10, n); n >= 2*k {
		starts := func(ss []started) []time.Duration {
			out := make([]time.Duration, len(ss))
			for i, s := range ss {
				out[i] = s.start
			}
			return out
		}
		a, b := benchkit.Percentile(starts(r.envs[:k]), 50), benchkit.Percentile(starts(r.envs[n-k:]), 50)
		fmt.Fprintf(tw, "create → RUNNING, p50 of first %d / last %d\t%s\t%s\t%s\t\t\n", k, k, benchkit.Ms(a), benchkit.Ms(b), ratio(a, b))
	}
	if k := min(10, n); n >= 2*k {
		printSteps(tw, r.envs[:k], r.envs[n-k:], ratio)
	}
	if len(r.runc) > 0 {
		fmt.Fprintf(tw, "baseline: runc run --detach (sleep)\t%s\t%s\t%s\t\t\n", benchkit.Ms(r.runc[0].start), benchkit.Ms(r.runc[len(r.runc)-1].start), ratio(r.runc[0].start, r.runc[len(r.runc)-1].start))
	}
	_ = tw.Flush()
}

// printSteps prints each runner step's p50 over the first and the last
// environments (from the runner's "step done" log lines).
func printSteps(w io.Writer, first, last []started, ratio func(a, b time.Duration) string) {
	var order []string
	took := func(ss []started) map[string][]time.Duration {
		m := map[string][]time.Duration{}
		for _, s := range ss {
			for _, e := range s.steps {
				if _, ok := m[e.Step]; !ok && !slices.Contains(order, e.Step) {
					order = append(order, e.Step)
				}
				m[e.Step] = append(m[e.Step], e.Took)
			}
		}
		return m
	}
	a, b := took(first), took(last)
	for _, step := range order {
		if len(a[step]) == 0 || len(b[step]) == 0 {
			continue
		}
		pa, pb := benchkit.Percentile(a[step], 50), benchkit.Percentile(b[step], 50)
		fmt.Fprintf(w, "  runner step %s, p50 of first %d / last %d\t%s\t%s\t%s\t\t\n", step, len(first), len(last), benchkit.Ms(pa), benchkit.Ms(pb), ratio(pa, pb))
	}
}
