package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

// The targets for cove's control under full load.
const (
	targetP99         = 10 * time.Millisecond
	targetIdleRatio   = 2.0 // cove p99 ≤ 2 × idle p99
	targetStaticRatio = 5.0 // static quota p99 ≥ 5 × cove p99
)

func printReport(w io.Writer, mach benchkit.Machine, o options, cpus float64, idle measurement, ms []measurement, control bool, modes []string, coveCgroups []string) {
	fmt.Fprintf(w, "cove interactive benchmark, %s\n", mach.When.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "machine: %d CPUs (%s), kernel %s, %s, cgroups %s\n", mach.CPUs, mach.CPUModel, mach.Kernel, mach.Runc, mach.Cgroups)
	fmt.Fprintf(w, "load:    %s at start, %s at end (1/5/15 min)\n", mach.LoadStart, mach.LoadEnd)
	fmt.Fprintf(w, "%d keystrokes per case and client placement, echo over OpenSSH → cove's SSH gateway → agent → busybox sh on a pty;\n", o.keys)
	fmt.Fprintf(w, "a loaded environment runs %d CPU spinners; class: %g CPUs per environment\n", o.spinners, cpus)
	fmt.Fprintf(w, "A thrott.: share of the 100 ms periods in which A's cgroup (its shell's and agent's) was throttled\n")
	if o.shield > 0 {
		fmt.Fprintf(w, "shield: the benchmark's processes and the environments' parent cgroup weigh %d× the default against other work on the machine\n", o.shield)
	}
	for _, c := range coveCgroups {
		fmt.Fprintf(w, "cove up (the runner) ran in: %s\n", c)
	}
	for _, mode := range modes {
		fmt.Fprintln(w)
		printMode(w, mode, idle, ms, control)
	}
}

// clientTitle says where the client side ran.
func clientTitle(mode string) string {
	if mode == clientLaptop {
		return "client stands in for a laptop (terminal, ssh and ProxyCommand in a cgroup of their own at the highest CPU weight)"
	}
	return "client on the runner host (terminal, ssh and ProxyCommand compete with the host's load, as before 2026-12-04)"
}

// printMode prints the tables and targets for one client placement.
func printMode(w io.Writer, mode string, idle measurement, ms []measurement, control bool) {
	fmt.Fprintf(w, "== %s\n", clientTitle(mode))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "policy\tcase\t%10s\t%10s\t%8s\t%8s\t%10s\tp99 / idle p99\t\n", "p50", "p99", "CPUs", "A CPUs", "A thrott.")
	idle99 := p(idle, mode, 99)
	row := func(m measurement) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%8.2f\t%8.2f\t%9.0f%%\t%9.1fx\t\n", m.policy, m.load, benchkit.Ms(p(m, mode, 50)), benchkit.Ms(p(m, mode, 99)),
			m.cpus, m.aCPUs, 100*m.aThrottled, ratio(p(m, mode, 99), idle99))
	}
	row(idle)
	for _, m := range ms {
		row(m)
	}
	if !control {
		fmt.Fprintf(tw, "%s\t%s\t%10s\t%10s\t\t\t\t\t\n", controlName, "(all)", "not available", "")
	}
	_ = tw.Flush()

	fmt.Fprintf(w, "\nwaited for a CPU per keystroke, on average (run-queue wait of the threads on the path, /proc/<pid>/task/*/schedstat):\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "policy\tcase\t")
	for _, r := range roles {
		fmt.Fprintf(tw, "%12s\t", r)
	}
	fmt.Fprintf(tw, "\n")
	for _, m := range append([]measurement{idle}, ms...) {
		fmt.Fprintf(tw, "%s\t%s\t", m.policy, m.load)
		smp := m.by[mode]
		for _, r := range roles {
			v := 0.0
			if smp != nil && len(smp.lat) > 0 {
				v = float64(smp.waits[r]) / float64(len(smp.lat)) / float64(time.Millisecond)
			}
			fmt.Fprintf(tw, "%9.2f ms\t", v)
		}
		fmt.Fprintf(tw, "\n")
	}
	_ = tw.Flush()

	full := loadName(len(envNames))
	static, cove := find(ms, "static CFS quota (class CPUs)", full), find(ms, controlName, full)
	fmt.Fprintf(w, "\ntargets, %s, client %s:\n", full, mode)
	if cove == nil {
		fmt.Fprintf(w, "  cove's control loop: not available in this cove (no --cpu-control): targets not measured\n")
		return
	}
	c99 := p(*cove, mode, 99)
	fmt.Fprintf(w, "  cove p99 %s (target < %s)\n", benchkit.Ms(c99), benchkit.Ms(targetP99))
	fmt.Fprintf(w, "  cove p99 / idle p99 %.1fx (target ≤ %.0fx; idle p99 %s)\n", ratio(c99, idle99), targetIdleRatio, benchkit.Ms(idle99))
	if static != nil {
		fmt.Fprintf(w, "  static quota p99 / cove p99 %.1fx (target ≥ %.0fx)\n", ratio(p(*static, mode, 99), c99), targetStaticRatio)
	}
}

// p is the q-th percentile of m's latencies with the client in mode.
func p(m measurement, mode string, q float64) time.Duration {
	smp := m.by[mode]
	if smp == nil {
		return 0
	}
	return benchkit.Percentile(smp.lat, q)
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func find(ms []measurement, policy, load string) *measurement {
	for i := range ms {
		if ms[i].policy == policy && ms[i].load == load {
			return &ms[i]
		}
	}
	return nil
}
