package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

func printReport(w io.Writer, mach benchkit.Machine, disk string, o options, ms []measurement) {
	fmt.Fprintf(w, "cove IO benchmark, %s\n", mach.When.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "machine: %d CPUs (%s), kernel %s, %s, cgroups %s\n", mach.CPUs, mach.CPUModel, mach.Kernel, mach.Runc, mach.Cgroups)
	fmt.Fprintf(w, "load:    %s at start, %s at end (1/5/15 min)\n", mach.LoadStart, mach.LoadEnd)
	fmt.Fprintf(w, "disk:    %s\n", disk)
	fmt.Fprintf(w, "A: %d × (write %d bytes + fsync), %s apart (at most %s), appending to a file in its workspace\n", o.n, o.size, o.gap, o.probeMax)
	fmt.Fprintf(w, "B: %d writers, %s buffered writes to %s files, as fast as they can\n\n", o.writers, mib(o.block), mib(o.fileSize))

	var base *measurement
	if len(ms) > 0 && !ms[0].writers {
		base = &ms[0]
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "policy\tcase\t%5s\t%10s\t%10s\t%8s\t%8s\t%8s\t%9s\t%12s\t%10s\t\n",
		"ops", "fsync p50", "p99", "p50/base", "p99/base", "B wrote", "B fsynced", "charged to B", "disk wrote")
	for _, m := range ms {
		fmt.Fprintf(tw, "%s\t%s\t%5d\t%10s\t%10s\t%8s\t%8s\t%8s\t%9s\t%12s\t%10s\t\n", m.policy, m.load, len(m.lat),
			benchkit.Ms(p(m, 50)), benchkit.Ms(p(m, 99)), ratio(m, base, 50), ratio(m, base, 99),
			rateOf(m.writers, m.written, m.window), rateOf(m.writers, m.synced, m.window),
			rateOf(true, int64(m.charged), m.hostWindow), rateOf(true, int64(m.disk), m.hostWindow))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nbase: A alone without IO limits. Rates in MiB/s over A's measurement: B's as its writers counted them\n")
	fmt.Fprintf(w, "(written: returned by write; fsynced: made durable), \"charged to B\" as B's cgroup counted the bytes\n")
	fmt.Fprintf(w, "it wrote to disks (what its IO limits act on), \"disk wrote\" the whole disk (every writer on the host).\n")
	if mach.Cgroups == "v1" {
		fmt.Fprintf(w, "cgroup v1: the kernel's flusher threads write pages back in the root cgroup, so writes B leaves\n")
		fmt.Fprintf(w, "to writeback are neither charged to B nor throttled; direct IO and B's own fsyncs are.\n")
	}
}

// p is the q-th percentile of m's latencies.
func p(m measurement, q float64) time.Duration { return benchkit.Percentile(m.lat, q) }

// ratio formats m's q-th percentile against base's.
func ratio(m measurement, base *measurement, q float64) string {
	if base == nil || p(*base, q) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fx", float64(p(m, q))/float64(p(*base, q)))
}

// rateOf formats bytes over d in MiB/s ("-" when not measured).
func rateOf(measured bool, bytes int64, d time.Duration) string {
	if !measured || d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(bytes)/(1<<20)/d.Seconds())
}
