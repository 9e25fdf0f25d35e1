// Command start measures how long cove takes from "create an environment"
// to "the first command over SSH returned", with the image already cached,
// and compares it with a bare `runc run` of the same root filesystem measured
// in the same run.
//
// It builds cove, serves a test image from an in-process registry on
// 127.0.0.1, starts `cove up` on free loopback ports with a temporary data
// directory and a private runc root, does one warm-up run (which pulls the
// image), then N measured runs. Each run creates an environment through the
// API, follows it with WatchEnvironments, reads the runner's "step done" log
// lines for the per-step breakdown, runs `cove ssh NAME -- true` and deletes
// the environment. It prints p50 and p90 per step, the runc baseline and the
// ratio between them. Everything it creates is removed at the end, also on
// failure or interrupt.
//
// Usage (as root, from the repository root):
//
//	go run ./bench/start [-n 20] [-image busybox|debian] [-cove bin/cove]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

type options struct {
	runs    int
	image   string
	cove    string
	runc    string
	keepLog bool
}

func main() {
	var o options
	flag.IntVar(&o.runs, "n", 20, "measured runs (after one warm-up run)")
	flag.StringVar(&o.image, "image", "busybox", "test image: busybox or debian")
	flag.StringVar(&o.cove, "cove", "", "cove binary to use (default: build ./cmd/cove into a temporary directory)")
	flag.StringVar(&o.runc, "runc", "runc", "runc binary, for cove and for the baseline")
	flag.BoolVar(&o.keepLog, "keep-log", false, "copy cove up's log to ./bench-start.log")
	flag.Parse()

	benchkit.Main("bench/start", func(ctx context.Context) error { return run(ctx, o, os.Stdout) })
}

func run(ctx context.Context, o options, out io.Writer) (retErr error) {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root: cove's runner and runc need it")
	}
	if o.runs < 1 {
		return fmt.Errorf("-n must be at least 1")
	}
	var cl benchkit.Cleanups
	defer cl.Run()
	tmp, runRoot, err := benchkit.Workdir(&cl)
	if err != nil {
		return err
	}

	coveBin := o.cove
	if coveBin == "" {
		benchkit.Progress("building cove")
		if coveBin, err = benchkit.BuildCove(ctx, tmp); err != nil {
			return err
		}
	}

	img, imgName, err := benchkit.LoadImage(ctx, o.image)
	if err != nil {
		return err
	}
	reg, stopReg, err := benchkit.ServeImage(img, imgName)
	if err != nil {
		return err
	}
	cl.Add(stopReg)
	imageRef := reg + "/" + imgName
	repo, err := benchkit.MakeRepo(ctx, filepath.Join(tmp, "repo"))
	if err != nil {
		return err
	}

	benchkit.Progress("unpacking %s for the runc baseline", imageRef)
	base, err := benchkit.NewBaseline(ctx, o.runc, img, filepath.Join(tmp, "bundle"), filepath.Join(runRoot, "runc-baseline"), "/bin/true")
	if err != nil {
		return err
	}
	cl.Add(base.Cleanup)

	benchkit.Progress("starting cove up")
	coveRunc := filepath.Join(runRoot, "runc")
	cl.Add(func() { benchkit.RemoveCgroups(benchkit.DefaultCgroupParent()) })
	cl.Add(func() { benchkit.DeleteContainers(o.runc, coveRunc) }) // after cove up stops
	cv, err := benchkit.StartCove(ctx, benchkit.CoveOptions{Bin: coveBin, Runc: o.runc, Dir: tmp, RuncRoot: coveRunc})
	if err != nil {
		return err
	}
	keepLog := ""
	if o.keepLog {
		keepLog = "bench-start.log"
	}
	cl.Add(cv.StopFunc(&retErr, keepLog))
	b, err := benchkit.NewEnvs(ctx, cv, repo, imageRef)
	if err != nil {
		return err
	}
	cl.Add(b.Close)

	mach := benchkit.MachineInfo(ctx, o.runc)
	benchkit.Progress("warm-up (pulls the image; not counted)")
	if _, err := once(ctx, b, "bench-warmup"); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if _, err := base.RunOnce(ctx, "warmup"); err != nil {
		return fmt.Errorf("runc warm-up: %w", err)
	}

	var cove []runResult
	var runc []time.Duration
	for i := range o.runs {
		r, err := once(ctx, b, fmt.Sprintf("bench-%d", i))
		if err != nil {
			return fmt.Errorf("run %d: %w", i, err)
		}
		d, err := base.RunOnce(ctx, fmt.Sprint(i))
		if err != nil {
			return fmt.Errorf("runc run %d: %w", i, err)
		}
		cove, runc = append(cove, r), append(runc, d)
		benchkit.Progress("run %d/%d: total %s, runc %s", i+1, o.runs, benchkit.Ms(r.total), benchkit.Ms(d))
	}
	mach.LoadEnd = benchkit.LoadAvg()
	printReport(out, mach, imageRef, cove, runc)
	return nil
}
