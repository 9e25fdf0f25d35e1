package main

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

func report(out io.Writer, o options, m benchkit.Machine, kinds []kind, res []result) {
	fmt.Fprintf(out, "bench/disk  %s  %d CPUs (%s), kernel %s, cgroups %s\n", m.When.UTC().Format(time.RFC3339), m.CPUs, m.CPUModel, m.Kernel, m.Cgroups)
	fmt.Fprintf(out, "load average at start %s, at end %s\n", m.LoadStart, m.LoadEnd)
	fmt.Fprintf(out, "disk size %d MiB; %d setups per kind; IO: %d rounds of %d MiB sequential + %d × (4 KiB write + fsync)\n\n",
		o.size>>20, o.setups, o.rounds, o.write>>20, o.fsyncs)
	fmt.Fprintf(out, "%-14s %11s %11s %11s %11s %10s %11s %11s\n", "", "setup p50", "setup max", "teardn p50", "teardn max", "seq MB/s", "fsync p50", "fsync p99")
	var base result
	for i, k := range kinds {
		r := res[i]
		if i == 0 {
			base = r
		}
		fmt.Fprintf(out, "%-14s %11s %11s %11s %11s %10.0f %11s %11s\n", k.name(),
			benchkit.Ms(benchkit.Percentile(r.setup, 50)), benchkit.Ms(slices.Max(r.setup)),
			benchkit.Ms(benchkit.Percentile(r.teardown, 50)), benchkit.Ms(slices.Max(r.teardown)),
			median(r.mbps), benchkit.Ms(benchkit.Percentile(r.fsync, 50)), benchkit.Ms(benchkit.Percentile(r.fsync, 99)))
	}
	fmt.Fprintf(out, "\nnext to the plain dir (IO rounds alternate the kinds):\n")
	for i, k := range kinds[1:] {
		r := res[i+1]
		fmt.Fprintf(out, "  %-12s setup +%s, seq throughput %.2f×, fsync p99 %.2f×\n", k.name(),
			benchkit.Ms(benchkit.Percentile(r.setup, 50)-benchkit.Percentile(base.setup, 50)),
			median(r.mbps)/median(base.mbps),
			float64(benchkit.Percentile(r.fsync, 99))/float64(benchkit.Percentile(base.fsync, 99)))
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
