package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/covedev/cove/bench/internal/benchkit"
	"github.com/covedev/cove/internal/resources"
)

// policy is a `cove up` configuration of the class's IO limits.
type policy struct {
	name, short string // short names its directory, cgroup parent and log
	args        []string
}

// load is what B does while A measures.
type load struct {
	name       string
	writers    bool
	fsyncEvery int64 // bytes between B's fsyncs, 0: never
}

// fixture is what both `cove up` sessions share.
type fixture struct {
	o                  options
	coveBin, probeBin  string
	imageRef, repo     string
	tmp, runRoot       string
	diskMajor, diskMin int64 // the disk of the data dirs
}

func run(ctx context.Context, o options, out io.Writer) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root: cove's runner and runc need it")
	}
	if o.n < 1 || o.size < 1 || o.writers < 1 || o.block < 1 || o.fileSize < o.block || o.fsyncEvery < 1 {
		return fmt.Errorf("-n, -size, -writers, -block and -fsync-every must be at least 1, -file-size at least -block")
	}
	if o.writeBPS == 0 && o.writeIOPS == 0 {
		return fmt.Errorf("-write-bps or -write-iops must be set: the limited policy needs a limit")
	}
	var cl benchkit.Cleanups
	defer cl.Run()
	tmp, runRoot, err := benchkit.Workdir(&cl)
	if err != nil {
		return err
	}
	f := fixture{o: o, coveBin: o.cove, tmp: tmp, runRoot: runRoot, probeBin: filepath.Join(tmp, "ioprobe")}
	// The data dirs go below tmp: the limits apply to its disk.
	if f.diskMajor, f.diskMin, err = resources.BlockDevice(tmp); err != nil {
		return fmt.Errorf("the class's IO limits need a disk: %w", err)
	}
	in, err := benchkit.Prepare(ctx, tmp, o.cove, &cl)
	if err != nil {
		return err
	}
	f.coveBin, f.imageRef, f.repo = in.Cove, in.ImageRef, in.Repo
	benchkit.Progress("building ioprobe")
	if err := benchkit.BuildStatic(ctx, "./bench/io/ioprobe", f.probeBin); err != nil {
		return err
	}
	mach := benchkit.MachineInfo(ctx, o.runc)

	loads := []load{{name: "A alone"},
		{name: fmt.Sprintf("B writes, fsync every %s", mib(o.fsyncEvery)), writers: true, fsyncEvery: o.fsyncEvery}}
	if o.buffered {
		loads = append(loads, load{name: "B writes, no fsync", writers: true})
	}
	var ms []measurement
	for _, p := range f.policies() {
		err := f.session(ctx, p, func(s *session) error {
			for _, l := range loads {
				m, err := s.measure(ctx, l)
				if err != nil {
					return err
				}
				ms = append(ms, m)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	mach.LoadEnd = benchkit.LoadAvg()
	printReport(out, mach, f.diskInfo(), o, ms)
	return nil
}

// policies are no IO limits, then the class's limits from the options.
func (f *fixture) policies() []policy {
	limited := policy{short: "limits"}
	var what string
	if f.o.writeBPS > 0 {
		limited.args = append(limited.args, "--class-io-write-bps", strconv.FormatUint(f.o.writeBPS, 10))
		what = mib(int64(f.o.writeBPS)) + "/s"
	}
	if f.o.writeIOPS > 0 {
		limited.args = append(limited.args, "--class-io-write-iops", strconv.FormatUint(f.o.writeIOPS, 10))
		if what != "" {
			what += ", "
		}
		what += fmt.Sprintf("%d IOPS", f.o.writeIOPS)
	}
	limited.name = "class IO limits (write " + what + ")"
	return []policy{{name: "no IO limits", short: "none"}, limited}
}

// diskInfo describes the disk the environments write to.
func (f *fixture) diskInfo() string {
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", f.diskMajor, f.diskMin)
	name := "unknown"
	if real, err := filepath.EvalSymlinks(sys); err == nil {
		name = filepath.Base(real)
	}
	sched, _ := os.ReadFile(filepath.Join(sys, "queue", "scheduler"))
	rot, _ := os.ReadFile(filepath.Join(sys, "queue", "rotational"))
	return fmt.Sprintf("%s (%d:%d), scheduler %s, rotational=%s", name, f.diskMajor, f.diskMin,
		activeScheduler(string(sched)), strings.TrimSpace(string(rot)))
}

// activeScheduler picks the bracketed entry of queue/scheduler.
func activeScheduler(s string) string {
	if _, rest, ok := strings.Cut(s, "["); ok {
		if name, _, ok := strings.Cut(rest, "]"); ok {
			return name
		}
	}
	if s = strings.TrimSpace(s); s != "" {
		return s
	}
	return "unknown"
}

// mib formats a byte count in MiB.
func mib(b int64) string {
	return strconv.FormatFloat(float64(b)/(1<<20), 'f', -1, 64) + " MiB"
}
