// Command interactive measures keystroke echo latency over an SSH pty into
// an environment while it and its neighbours saturate the host's CPUs.
//
// It starts `cove up` and four environments (A and three neighbours, the
// default class), writes an OpenSSH configuration with `cove config-ssh`,
// and runs the real OpenSSH client (`ssh -tt A.cove`: cove's SSH gateway,
// then the agent) on a local pty. It types 200 keystrokes into A's shell,
// each time measuring how long until the shell's echo arrives, and erases
// each with a backspace. It measures: idle; while A runs 8 CPU spinners;
// while A and the three neighbours each run 8. Each loaded case is
// measured under every policy: no CPU control (no CFS quota), a static CFS
// quota of the class's CPUs per environment (cove's default, Gitpod's
// baseline), and cove's CPU control loop (`cove up --cpu-control`, in a
// second `cove up` with its own environments, when the binary has the
// flag). It prints p50 and p99 per case and the ratios the issue sets
// targets for. The client side (the terminal, ssh and its ProxyCommand)
// stands in for the developer's laptop in a cgroup of its own at the
// highest CPU weight, and also competes with the host's load as before:
// -client both (the default) measures each case both ways, -client laptop
// or -client host one (client.go). Everything it creates is removed at
// the end, also on failure or interrupt.
//
// Usage (as root, from the repository root):
//
//	go run ./bench/interactive [-keys 200] [-spinners 8] [-cove bin/cove] [-shield 10] [-client both|laptop|host] [-baselines=false]
package main

import (
	"context"
	"flag"
	"os"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

type options struct {
	keys, spinners int
	gap, settle    time.Duration
	cove, runc     string
	keepLog        bool
	shield         int
	client         string
	// baselines: also measure the policies cove is compared with (off:
	// only cove's, to compare cove builds with -cove).
	baselines bool
}

func main() {
	var o options
	flag.IntVar(&o.keys, "keys", 200, "keystrokes per measurement")
	flag.IntVar(&o.spinners, "spinners", 8, "CPU spinners each loaded environment runs")
	flag.DurationVar(&o.gap, "gap", 10*time.Millisecond, "pause between keystrokes (typing cadence)")
	flag.DurationVar(&o.settle, "settle", 5*time.Second, "wait after starting the load before typing (the control loop reacts within seconds)")
	flag.StringVar(&o.cove, "cove", "", "cove binary to use (default: build ./cmd/cove into a temporary directory)")
	flag.StringVar(&o.runc, "runc", "runc", "runc binary")
	flag.BoolVar(&o.keepLog, "keep-log", false, "copy cove up's log to ./bench-interactive.log")
	flag.IntVar(&o.shield, "shield", 0, "measure as on a host running cove alone: the benchmark's processes and the environments' parent cgroup get this many times the default CPU weight against other work on the machine (0: off)")
	flag.StringVar(&o.client, "client", "both", "where the client side (the terminal, ssh and its ProxyCommand `cove ssh --stdio`) runs: laptop (a cgroup of its own at the highest CPU weight, standing in for the developer's laptop), host (competing with the host's load, as figures before 2026-12-04 were measured) or both (each case both ways, alternating)")
	flag.BoolVar(&o.baselines, "baselines", true, "also measure the baselines (no control, static quota); -baselines=false measures only cove's control, with its own idle case, to compare cove builds")
	flag.Parse()

	benchkit.Main("bench/interactive", func(ctx context.Context) error { return run(ctx, o, os.Stdout) })
}
