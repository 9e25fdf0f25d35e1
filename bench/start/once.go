package main

import (
	"context"
	"fmt"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

// runResult is one measured create → first command.
type runResult struct {
	api, scheduled, pickup, running time.Duration // since the create call started
	steps                           map[string]time.Duration
	ssh, ssh2, total, delete        time.Duration
}

// once creates environment name, runs its first command over SSH, and
// deletes it.
func once(ctx context.Context, b *benchkit.Envs, name string) (runResult, error) {
	var r runResult
	t0 := time.Now()
	id, created, err := b.Create(ctx, name, "")
	if err != nil {
		return r, err
	}
	r.api = created.Sub(t0)

	timeout := 2 * time.Minute
	sched, err := b.WaitUntil(ctx, id, "scheduling", timeout, func(m *benchkit.Milestones) time.Time { return m.Scheduled })
	if err != nil {
		return r, err
	}
	pickup, err := b.WaitUntil(ctx, id, "runner pickup", timeout, func(m *benchkit.Milestones) time.Time { return m.Pickup })
	if err != nil {
		return r, err
	}
	running, err := b.WaitRunning(ctx, id, timeout)
	if err != nil {
		return r, err
	}
	r.scheduled, r.pickup, r.running = sched.Sub(t0), pickup.Sub(t0), running.Sub(t0)

	s0 := time.Now()
	if _, err := b.Cove.CLI(ctx, "ssh", name, "--", "true"); err != nil {
		return r, err
	}
	end := time.Now()
	r.ssh, r.total = end.Sub(s0), end.Sub(t0)
	if _, err := b.Cove.CLI(ctx, "ssh", name, "--", "true"); err != nil {
		return r, err
	}
	r.ssh2 = time.Since(end)

	if r.steps, err = createSteps(ctx, b.Cove, id); err != nil {
		return r, err
	}
	d0 := time.Now()
	if err := b.Delete(ctx, id); err != nil {
		return r, err
	}
	r.delete = time.Since(d0)
	return r, nil
}

// createSteps returns the durations of the runner's create steps, waiting
// briefly for the last line.
func createSteps(ctx context.Context, cv *benchkit.Cove, id string) (map[string]time.Duration, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		evs := cv.StepsOf(id)
		steps := map[string]time.Duration{}
		for _, e := range evs {
			steps[e.Step] += e.Took
		}
		_, started := steps["start"]
		if _, ok := steps["wait-agent"]; ok && started {
			return steps, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no \"step done\" log lines for start and wait-agent of %s (got %d lines)", id, len(evs))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
