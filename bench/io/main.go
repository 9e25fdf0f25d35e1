// Command io measures fsync latency in one environment while a neighbour
// writes to the same disk as fast as it can, with and without the class's
// block IO limits.
//
// It starts `cove up` and two environments of the default class, A and B,
// and copies into each a small static program (bench/io/ioprobe). A
// appends 4 KiB to a file in its workspace and fsyncs it, 1000 times 10 ms
// apart (for at most -probe-max), timing each write+fsync. Cases: A
// alone (the baseline); while B runs 4 writers doing 1 MiB buffered
// writes to large files with an fsync every 64 MiB; while B's writers
// never fsync (the kernel writes their pages back). Each case is measured under two policies, each in a `cove
// up` of its own with fresh environments: no IO limits, and the class's IO
// limits (`--class-io-write-bps`, `--class-io-write-iops`). It prints p50
// and p99 per case, their ratios to A alone without limits, and what B
// achieved meanwhile: bytes written, bytes fsynced, bytes the kernel
// charged to B's cgroup (what its IO limits can act on) and bytes the
// whole disk wrote. Everything it creates is removed at the end, also on
// failure or interrupt.
//
// Usage (as root, from the repository root):
//
//	go run ./bench/io [-n 1000] [-writers 4] [-write-bps 52428800] [-write-iops 1000] [-buffered=false] [-cove bin/cove]
package main

import (
	"context"
	"flag"
	"os"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

type options struct {
	n, size, writers, keep           int
	gap, settle, settleMax, probeMax time.Duration
	block, fileSize, fsyncEvery      int64
	writeBPS, writeIOPS              uint64
	buffered                         bool
	cove, runc                       string
	keepLog                          bool
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 1000, "write+fsync operations A times per case")
	flag.IntVar(&o.size, "size", 4096, "bytes A writes before each fsync")
	flag.DurationVar(&o.gap, "gap", 10*time.Millisecond, "pause between A's operations (a commit or a save at a time, not a flood)")
	flag.DurationVar(&o.probeMax, "probe-max", time.Minute, "most time A measures per case (fewer than -n operations when fsyncs are slow)")
	flag.IntVar(&o.writers, "writers", 4, "B's parallel writers")
	flag.Int64Var(&o.block, "block", 1<<20, "bytes per write of B's writers")
	flag.Int64Var(&o.fileSize, "file-size", 1<<30, "size of B's files (each writer keeps its last one)")
	flag.Int64Var(&o.fsyncEvery, "fsync-every", 64<<20, "bytes B's writers write between fsyncs")
	flag.BoolVar(&o.buffered, "buffered", true, "also measure B's writers without fsync (writeback left to the kernel)")
	flag.Uint64Var(&o.writeBPS, "write-bps", 50<<20, "the class's write limit for the limited policy, bytes/s (--class-io-write-bps)")
	flag.Uint64Var(&o.writeIOPS, "write-iops", 1000, "the class's write operations per second for the limited policy (--class-io-write-iops)")
	flag.DurationVar(&o.settle, "settle", 5*time.Second, "least time B's writers run before A measures")
	flag.DurationVar(&o.settleMax, "settle-max", 2*time.Minute, "most time A waits for B's writers to reach their steady state (see docs/performance.md)")
	flag.StringVar(&o.cove, "cove", "", "cove binary to use (default: build ./cmd/cove into a temporary directory)")
	flag.StringVar(&o.runc, "runc", "runc", "runc binary")
	flag.BoolVar(&o.keepLog, "keep-log", false, "copy cove up's logs to ./bench-io-{none,limits}.log")
	flag.Parse()
	o.keep = 1

	benchkit.Main("bench/io", func(ctx context.Context) error { return run(ctx, o, os.Stdout) })
}
