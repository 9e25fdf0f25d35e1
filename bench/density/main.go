// Command density measures what idle environments cost: it starts N
// environments (busybox image, agent running, nobody connected), lets them
// settle, then measures over a window the CPU their cgroups and the runner
// process use and the memory they hold, per environment, and the start
// time of the N-th environment next to the first's.
//
// Only the environments' own cgroups and the `cove up` process (server and
// runner in one) are measured, never host-wide figures: the host may be
// shared. The baseline, measured in the same run and the same window, is N
// bare `runc run --detach` busybox containers running sleep, each in its
// own cgroup. Everything it creates is removed at the end, also on failure
// or interrupt.
//
// Usage (as root, from the repository root):
//
//	go run ./bench/density [-n 100] [-window 60s] [-settle 15s] [-cove bin/cove]
package main

import (
	"context"
	"flag"
	"os"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

type options struct {
	n              int
	window, settle time.Duration
	cove, runc     string
	baseline       bool
	keepLog        bool
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 100, "idle environments to start")
	flag.DurationVar(&o.window, "window", time.Minute, "how long CPU use is measured, once all environments are up")
	flag.DurationVar(&o.settle, "settle", 15*time.Second, "wait after the last start before the window opens")
	flag.StringVar(&o.cove, "cove", "", "cove binary to use (default: build ./cmd/cove into a temporary directory)")
	flag.StringVar(&o.runc, "runc", "runc", "runc binary, for cove and for the baseline")
	flag.BoolVar(&o.baseline, "baseline", true, "also start N bare runc containers running sleep, measured in the same window")
	flag.BoolVar(&o.keepLog, "keep-log", false, "copy cove up's log to ./bench-density.log")
	flag.Parse()

	benchkit.Main("bench/density", func(ctx context.Context) error { return run(ctx, o, os.Stdout) })
}
