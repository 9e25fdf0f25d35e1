package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

// started is one environment or baseline container and how long its start
// took.
type started struct {
	name, id, cgroup string
	start            time.Duration // create call → RUNNING seen (runc: runc run --detach returned)
	first            time.Duration // create call → first `cove ssh NAME -- true` returned
	steps            []benchkit.StepEvent
}

// densitySubnet is the environments' subnet: room for 65,000 of them.
const densitySubnet = "10.218.0.0/16"

func run(ctx context.Context, o options, out io.Writer) (retErr error) {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root: cove's runner and runc need it")
	}
	if o.n < 1 {
		return fmt.Errorf("-n must be at least 1")
	}
	if o.window <= 0 {
		return fmt.Errorf("-window must be positive")
	}
	var cl benchkit.Cleanups
	defer cl.Run()
	tmp, runRoot, err := benchkit.Workdir(&cl)
	if err != nil {
		return err
	}
	in, err := benchkit.Prepare(ctx, tmp, o.cove, &cl)
	if err != nil {
		return err
	}
	coveBin, imageRef, repo := in.Cove, in.ImageRef, in.Repo

	benchkit.Progress("starting cove up")
	coveRunc := filepath.Join(runRoot, "runc")
	cgParent := benchkit.DefaultCgroupParent()
	metricsAddr, err := benchkit.FreePort()
	if err != nil {
		return err
	}
	cl.Add(func() { benchkit.RemoveCgroups(cgParent) })
	cl.Add(func() { benchkit.DeleteContainers(o.runc, coveRunc) }) // after cove up stops
	cv, err := benchkit.StartCove(ctx, benchkit.CoveOptions{Bin: coveBin, Runc: o.runc, Dir: tmp, RuncRoot: coveRunc, CgroupParent: cgParent,
		// Room for N environments of one user on one runner.
		Args: []string{"--max-environments", fmt.Sprint(o.n + 1), "--max-runner-environments", fmt.Sprint(max(256, o.n+1)),
			"--max-environments-per-user", "0", "--max-running-per-user", "0",
			// go_goroutines, for the runner's goroutines per environment.
			"--metrics-listen", metricsAddr,
			// Its own subnet (the later flag wins): the other benchmarks'
			// cove up, on benchkit's subnet, may run at the same time.
			"--subnet", densitySubnet}})
	if err != nil {
		return err
	}
	keepLog := ""
	if o.keepLog {
		keepLog = "bench-density.log"
	}
	cl.Add(cv.StopFunc(&retErr, keepLog))
	envs, err := benchkit.NewEnvs(ctx, cv, repo, imageRef)
	if err != nil {
		return err
	}
	cl.Add(envs.Close)
	mach := benchkit.MachineInfo(ctx, o.runc)

	benchkit.Progress("warm-up environment (pulls the image; not counted)")
	if _, err := startEnv(ctx, envs, "density-warmup"); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if err := deleteEnv(ctx, envs, "density-warmup"); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	rss0, err := benchkit.ProcRSS(cv.Pid())
	if err != nil {
		return err
	}
	// benchkit.StartCove names the nftables table after this process.
	table := fmt.Sprintf("cove-bench-%d", os.Getpid())
	var res result
	if res.host0, err = countHost(ctx, metricsAddr, table); err != nil {
		return err
	}
	for i := range o.n {
		s, err := startEnv(ctx, envs, fmt.Sprintf("idle-%03d", i))
		if err != nil {
			return fmt.Errorf("environment %d of %d: %w", i+1, o.n, err)
		}
		res.envs = append(res.envs, s)
		if i == 0 || (i+1)%10 == 0 || i+1 == o.n {
			benchkit.Progress("environment %d/%d up: start %s, first command %s", i+1, o.n, benchkit.Ms(s.start), benchkit.Ms(s.first))
		}
	}
	if res.envs, err = withCgroups(res.envs, cgParent); err != nil {
		return err
	}

	if o.baseline {
		baseParent := cgParent + "-runc"
		cl.Add(func() { benchkit.RemoveCgroups(baseParent) })
		benchkit.Progress("starting %d bare runc containers running sleep (baseline)", o.n)
		base, err := benchkit.NewBaseline(ctx, o.runc, in.Image, filepath.Join(tmp, "bundle"), filepath.Join(runRoot, "runc-baseline"), "sleep", "2147483647")
		if err != nil {
			return err
		}
		base.CgroupParent = baseParent
		cl.Add(base.Cleanup)
		for i := range o.n {
			id, d, err := base.StartDetached(ctx, fmt.Sprintf("sleep-%03d", i))
			if err != nil {
				return fmt.Errorf("baseline container %d of %d: %w", i+1, o.n, err)
			}
			res.runc = append(res.runc, started{name: id, cgroup: "/" + baseParent + "/" + id, start: d})
		}
	}

	benchkit.Progress("all up; settling for %s", o.settle)
	if err := sleep(ctx, o.settle); err != nil {
		return err
	}
	benchkit.Progress("measuring for %s", o.window)
	if err := res.measure(ctx, cv.Pid(), o.window); err != nil {
		return err
	}
	rss1, err := benchkit.ProcRSS(cv.Pid())
	if err != nil {
		return err
	}
	res.runnerRSSGrowth = rss1 - rss0
	res.runnerRSS = rss1
	if res.host1, err = countHost(ctx, metricsAddr, table); err != nil {
		return err
	}
	for i := range res.envs {
		res.envs[i].steps = cv.StepsOf(res.envs[i].id)
	}
	mach.LoadEnd = benchkit.LoadAvg()
	printReport(out, mach, o, res)
	benchkit.Progress("deleting %d environments", o.n)
	return nil
}

// startEnv creates environment name and runs its first command over SSH.
func startEnv(ctx context.Context, envs *benchkit.Envs, name string) (started, error) {
	s := started{name: name}
	t0 := time.Now()
	id, _, err := envs.Create(ctx, name, "")
	if err != nil {
		return s, err
	}
	running, err := envs.WaitRunning(ctx, id, 2*time.Minute)
	if err != nil {
		return s, err
	}
	s.id = id
	s.start = running.Sub(t0)
	if _, err := envs.Cove.CLI(ctx, "ssh", name, "--", "true"); err != nil {
		return s, err
	}
	s.first = time.Since(t0)
	return s, nil
}

// deleteEnv deletes environment name.
func deleteEnv(ctx context.Context, envs *benchkit.Envs, name string) error {
	id, err := envs.ID(ctx, name)
	if err != nil {
		return err
	}
	return envs.Delete(ctx, id)
}

// withCgroups gives each environment its cgroup: the environments are the
// only cgroups below the bench's cgroup parent.
func withCgroups(ss []started, parent string) ([]started, error) {
	dir := filepath.Join("/sys/fs/cgroup", parent)
	if !benchkit.CgroupV2() {
		dir = filepath.Join("/sys/fs/cgroup/cpuacct", parent)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("environments' cgroups: %w", err)
	}
	var cgs []string
	for _, e := range ents {
		if e.IsDir() {
			cgs = append(cgs, "/"+parent+"/"+e.Name())
		}
	}
	if len(cgs) != len(ss) {
		return nil, fmt.Errorf("%d environments but %d cgroups below %s", len(ss), len(cgs), dir)
	}
	// Which cgroup is which environment does not matter for the figures.
	for i := range ss {
		ss[i].cgroup = cgs[i]
	}
	return ss, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
