// Command disk compares the two ways cove could give an environment a
// hard disk quota, next to a plain directory (no quota) on the data dir's
// own file system, all measured in the same run:
//
//   - loop: a sparse image file with ext4 (lazy init), on an autoclear,
//     direct-IO loop device, mounted (internal/diskquota, what cove uses);
//   - btrfs: a subvolume with a qgroup limit in a btrfs pool (itself a
//     loop-mounted image here, as on a host without a btrfs disk).
//
// For each it prints the setup cost per environment (make it ready to
// write) and the teardown cost (unmount, detach, remove), and the IO
// overhead inside: sequential write throughput (1 MiB writes, then fsync)
// and the p50/p99 latency of a 4 KiB write + fsync. Rounds alternate the
// three kinds so that the machine's load, shared with others, falls on
// each alike; the figures are medians over rounds.
//
// Usage (as root, from the repository root; needs mkfs.ext4 and, for the
// btrfs column, mkfs.btrfs and btrfs from btrfs-progs):
//
//	go run ./bench/disk [-n 20] [-rounds 5] [-size BYTES] [-write BYTES] [-fsyncs 200]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

type options struct {
	setups, rounds, fsyncs int
	size, write            int64
	dir                    string
}

func main() {
	var o options
	flag.IntVar(&o.setups, "n", 20, "environments set up and torn down per kind (setup cost)")
	flag.IntVar(&o.rounds, "rounds", 5, "IO rounds per kind")
	flag.IntVar(&o.fsyncs, "fsyncs", 200, "4 KiB write+fsync pairs per IO round")
	flag.Int64Var(&o.size, "size", 1<<30, "each environment's disk size, bytes")
	flag.Int64Var(&o.write, "write", 256<<20, "bytes written sequentially per IO round")
	flag.StringVar(&o.dir, "dir", "/var/tmp", "directory on the file system under test (the runner's data dir's)")
	flag.Parse()
	benchkit.Main("bench/disk", func(ctx context.Context) error { return run(ctx, o, os.Stdout) })
}

func run(ctx context.Context, o options, out io.Writer) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root: loop devices and mounts need it")
	}
	if o.setups < 1 || o.rounds < 1 || o.fsyncs < 1 || o.write < 1<<20 || o.size < 2*o.write {
		return fmt.Errorf("-n, -rounds, -fsyncs must be positive, -write at least 1 MiB and -size at least twice -write")
	}
	var cl benchkit.Cleanups
	defer cl.Run()
	tmp, err := os.MkdirTemp(o.dir, "cove-bench-disk-")
	if err != nil {
		return err
	}
	cl.Add(func() { benchkit.RemoveTree(tmp) })
	m := benchkit.MachineInfo(ctx, "runc")

	kinds := []kind{plainKind{}, loopKind{}}
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		benchkit.Progress("no mkfs.btrfs (btrfs-progs): btrfs column skipped")
	} else {
		bk, err := newBtrfsKind(ctx, tmp, &cl)
		if err != nil {
			return fmt.Errorf("btrfs pool: %w", err)
		}
		kinds = append(kinds, bk)
	}

	res := make([]result, len(kinds))
	benchkit.Progress("setup and teardown, %d environments per kind", o.setups)
	for i := range o.setups {
		for k, kd := range kinds {
			dir := filepath.Join(tmp, fmt.Sprintf("%s-%d", kd.name(), i))
			began := time.Now()
			ws, err := kd.setup(ctx, dir, o.size)
			if err != nil {
				return fmt.Errorf("%s setup: %w", kd.name(), err)
			}
			res[k].setup = append(res[k].setup, time.Since(began))
			if err := os.WriteFile(filepath.Join(ws, "f"), []byte("x"), 0o600); err != nil {
				return fmt.Errorf("%s: write in new environment: %w", kd.name(), err)
			}
			began = time.Now()
			if err := kd.teardown(ctx, dir); err != nil {
				return fmt.Errorf("%s teardown: %w", kd.name(), err)
			}
			res[k].teardown = append(res[k].teardown, time.Since(began))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	benchkit.Progress("IO, %d rounds per kind", o.rounds)
	for r := range o.rounds {
		for k, kd := range kinds {
			dir := filepath.Join(tmp, fmt.Sprintf("io-%s-%d", kd.name(), r))
			ws, err := kd.setup(ctx, dir, o.size)
			if err != nil {
				return fmt.Errorf("%s setup: %w", kd.name(), err)
			}
			mbps, err := seqWrite(ctx, filepath.Join(ws, "seq"), o.write)
			if err == nil {
				var lat []time.Duration
				lat, err = fsyncLatency(ctx, filepath.Join(ws, "fsync"), o.fsyncs)
				res[k].fsync = append(res[k].fsync, lat...)
			}
			res[k].mbps = append(res[k].mbps, mbps)
			if terr := kd.teardown(ctx, dir); err == nil {
				err = terr
			}
			if err != nil {
				return fmt.Errorf("%s IO: %w", kd.name(), err)
			}
		}
	}
	m.LoadEnd = benchkit.LoadAvg()
	report(out, o, m, kinds, res)
	return nil
}

type result struct {
	setup, teardown, fsync []time.Duration
	mbps                   []float64
}

// kind is one way of giving an environment its disk.
type kind interface {
	name() string
	// setup makes the environment's disk under dir and returns the
	// directory its data goes to.
	setup(ctx context.Context, dir string, size int64) (string, error)
	teardown(ctx context.Context, dir string) error
}
