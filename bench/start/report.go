package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

// createSteps are the runner's steps for a new environment, in order.
var createStepOrder = []string{"prepare", "clone", "image", "mount", "start", "wait-agent"}

// column extracts one duration per run.
func column(rs []runResult, f func(runResult) time.Duration) []time.Duration {
	out := make([]time.Duration, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

func printReport(w io.Writer, m benchkit.Machine, imageRef string, rs []runResult, runc []time.Duration) {
	fmt.Fprintf(w, "cove start benchmark, %s\n", m.When.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "machine: %d CPUs (%s), kernel %s, %s\n", m.CPUs, m.CPUModel, m.Kernel, m.Runc)
	fmt.Fprintf(w, "load:    %s at start, %s at end (1/5/15 min)\n", m.LoadStart, m.LoadEnd)
	fmt.Fprintf(w, "image:   %s (cached), %d runs after 1 warm-up\n\n", imageRef, len(rs))

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(name string, ds []time.Duration) {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", name, benchkit.Ms(benchkit.Percentile(ds, 50)), benchkit.Ms(benchkit.Percentile(ds, 90)))
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\n", "cove: create → first command over SSH", fmt.Sprintf("%10s", "p50"), fmt.Sprintf("%10s", "p90"))
	row("create RPC round trip", column(rs, func(r runResult) time.Duration { return r.api }))
	row("scheduled (runner_id seen, since create)", column(rs, func(r runResult) time.Duration { return r.scheduled }))
	row("runner pickup (first runner status seen, since create)", column(rs, func(r runResult) time.Duration { return r.pickup }))
	names := stepNames(rs)
	for _, s := range names {
		row("  runner step "+s, column(rs, func(r runResult) time.Duration { return r.steps[s] }))
	}
	stepSum := func(r runResult) time.Duration {
		var t time.Duration
		for _, s := range names {
			t += r.steps[s]
		}
		return t
	}
	row("  sum of runner steps", column(rs, stepSum))
	row("  pickup → RUNNING seen, outside steps", column(rs, func(r runResult) time.Duration { return r.running - r.pickup - stepSum(r) }))
	row("RUNNING seen (since create)", column(rs, func(r runResult) time.Duration { return r.running }))
	row("first command: cove ssh NAME -- true", column(rs, func(r runResult) time.Duration { return r.ssh }))
	total := column(rs, func(r runResult) time.Duration { return r.total })
	row("total: create call → first command returned", total)
	fmt.Fprintf(tw, "\t\t\n%s\t\t\n", "not in total:") // tabs keep one column block
	row("second command: cove ssh NAME -- true", column(rs, func(r runResult) time.Duration { return r.ssh2 }))
	row("delete (RPC → DELETED seen)", column(rs, func(r runResult) time.Duration { return r.delete }))
	fmt.Fprintf(tw, "\t\t\n")
	row("baseline: runc run /bin/true (same rootfs)", runc)
	ratio := func(p float64) string {
		b := benchkit.Percentile(runc, p)
		if b == 0 {
			return fmt.Sprintf("%10s", "n/a")
		}
		return fmt.Sprintf("%9.1fx", float64(benchkit.Percentile(total, p))/float64(b))
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\n", "ratio total / runc", ratio(50), ratio(90))
	_ = tw.Flush()
}

// stepNames are the create steps seen, in the runner's order, then any
// other step names seen in create runs.
func stepNames(rs []runResult) []string {
	seen := map[string]bool{}
	for _, r := range rs {
		for s := range r.steps {
			seen[s] = true
		}
	}
	var out []string
	for _, s := range createStepOrder {
		if seen[s] {
			out = append(out, s)
			delete(seen, s)
		}
	}
	var rest []string
	for s := range seen {
		rest = append(rest, s)
	}
	slices.Sort(rest)
	return append(out, rest...)
}
