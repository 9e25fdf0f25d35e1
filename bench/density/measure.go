package main

import (
	"context"
	"fmt"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

// result is what the run measured.
type result struct {
	envs, runc []started

	window                     time.Duration // measured wall time of the window
	envCPU, runcCPU            []time.Duration
	runnerCPU, childCPU        time.Duration // cove up itself; its waited-for children (runc …)
	host0, host1               hostCounts    // before the first environment, at the end
	envMem, runcMem            []benchkit.Memory
	runnerRSS, runnerRSSGrowth int64
}

// cpuSnapshot reads the CPU time used so far by each cgroup of ss.
func cpuSnapshot(ss []started) ([]time.Duration, error) {
	out := make([]time.Duration, len(ss))
	for i, s := range ss {
		d, err := benchkit.CgroupCPU(s.cgroup)
		if err != nil {
			return nil, fmt.Errorf("CPU of %s: %w", s.name, err)
		}
		out[i] = d
	}
	return out, nil
}

// measure reads the CPU used over window by the environments, the baseline
// containers and the `cove up` process, then their memory.
func (r *result) measure(ctx context.Context, pid int, window time.Duration) error {
	e0, err := cpuSnapshot(r.envs)
	if err != nil {
		return err
	}
	b0, err := cpuSnapshot(r.runc)
	if err != nil {
		return err
	}
	p0, err := benchkit.ProcCPU(pid)
	if err != nil {
		return err
	}
	c0, err := procChildCPU(pid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := sleep(ctx, window); err != nil {
		return err
	}
	e1, err := cpuSnapshot(r.envs)
	if err != nil {
		return err
	}
	b1, err := cpuSnapshot(r.runc)
	if err != nil {
		return err
	}
	p1, err := benchkit.ProcCPU(pid)
	if err != nil {
		return err
	}
	c1, err := procChildCPU(pid)
	if err != nil {
		return err
	}
	r.window = time.Since(t0)
	r.envCPU, r.runcCPU, r.runnerCPU, r.childCPU = sub(e1, e0), sub(b1, b0), p1-p0, c1-c0
	if r.envMem, err = memSnapshot(r.envs); err != nil {
		return err
	}
	r.runcMem, err = memSnapshot(r.runc)
	return err
}

func sub(a, b []time.Duration) []time.Duration {
	out := make([]time.Duration, len(a))
	for i := range a {
		out[i] = a[i] - b[i]
	}
	return out
}

func memSnapshot(ss []started) ([]benchkit.Memory, error) {
	out := make([]benchkit.Memory, len(ss))
	for i, s := range ss {
		m, err := benchkit.CgroupMemory(s.cgroup)
		if err != nil {
			return nil, fmt.Errorf("memory of %s: %w", s.name, err)
		}
		out[i] = m
	}
	return out, nil
}
