package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

const (
	phaseRunning = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING
	phaseDeleted = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED
)

// milestones are the times the bench saw an environment reach each point.
type milestones struct {
	scheduled time.Time // metadata.runner_id set
	pickup    time.Time // first status written by the runner (observed_spec_version ≥ 1)
	running   time.Time // phase RUNNING for spec version 1
	deleted   time.Time // phase DELETED
	failure   string
	changed   chan struct{} // closed and replaced on every change
}

// bench drives environments through the API and one long watch.
type bench struct {
	cv       *cove
	api      *apiclient.Clients
	repo     string
	imageRef string
	cancel   context.CancelFunc
	done     chan struct{}

	mu   sync.Mutex
	envs map[string]*milestones // by id
}

func newBench(ctx context.Context, cv *cove, repo, imageRef string) (*bench, error) {
	tok, err := cv.token()
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	b := &bench{cv: cv, api: apiclient.New(hc, cv.server, tok), repo: repo, imageRef: imageRef,
		done: make(chan struct{}), envs: map[string]*milestones{}}
	// The watch outlives an interrupt of ctx: cleanup waits on it.
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	stream, err := b.api.Environments.WatchEnvironments(wctx, connect.NewRequest(&covev1.WatchEnvironmentsRequest{}))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch environments: %w", err)
	}
	go func() {
		defer close(b.done)
		defer stream.Close()
		for stream.Receive() {
			if e := stream.Msg().GetEnvironment(); e != nil {
				b.observe(time.Now(), e)
			}
		}
	}()
	return b, nil
}

// track returns the milestones of environment id, creating them.
func (b *bench) track(id string) *milestones {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.envs[id]
	if m == nil {
		m = &milestones{changed: make(chan struct{})}
		b.envs[id] = m
	}
	return m
}

// observe records the milestones env shows at time now.
func (b *bench) observe(now time.Time, env *covev1.Environment) {
	m := b.track(env.Id)
	b.mu.Lock()
	defer b.mu.Unlock()
	st := env.GetStatus()
	if m.scheduled.IsZero() && env.GetMetadata().GetRunnerId() != "" {
		m.scheduled = now
	}
	if m.pickup.IsZero() && st.GetObservedSpecVersion() >= 1 {
		m.pickup = now
	}
	if m.running.IsZero() && st.GetPhase() == phaseRunning && st.GetObservedSpecVersion() >= 1 {
		m.running = now
	}
	if m.deleted.IsZero() && st.GetPhase() == phaseDeleted {
		m.deleted = now
	}
	if f := st.GetFailureMessage(); f != "" {
		m.failure = f
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

// waitUntil waits until pick returns a time for environment id.
func (b *bench) waitUntil(ctx context.Context, id string, what string, timeout time.Duration, pick func(*milestones) time.Time) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m := b.track(id)
	for {
		b.mu.Lock()
		t, failure, changed := pick(m), m.failure, m.changed
		b.mu.Unlock()
		if !t.IsZero() {
			return t, nil
		}
		if failure != "" {
			return time.Time{}, fmt.Errorf("environment %s failed: %s", id, failure)
		}
		select {
		case <-changed:
		case <-b.done:
			return time.Time{}, errors.New("the watch ended")
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("waiting for %s of %s: %w", what, id, ctx.Err())
		}
	}
}

// runResult is one measured create → first command.
type runResult struct {
	api, scheduled, pickup, running time.Duration // since the create call started
	steps                           map[string]time.Duration
	ssh, ssh2, total, delete        time.Duration
}

// once creates environment name, runs its first command over SSH, and
// deletes it.
func (b *bench) once(ctx context.Context, name string) (runResult, error) {
	var r runResult
	t0 := time.Now()
	resp, err := b.api.Environments.CreateEnvironment(ctx, connect.NewRequest(&covev1.CreateEnvironmentRequest{
		Name: name,
		Spec: &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: b.repo}, DefaultImage: b.imageRef},
	}))
	created := time.Now()
	if err != nil {
		return r, fmt.Errorf("create: %w", err)
	}
	env := resp.Msg.Environment
	b.observe(created, env)
	r.api = created.Sub(t0)

	timeout := 2 * time.Minute
	sched, err := b.waitUntil(ctx, env.Id, "scheduling", timeout, func(m *milestones) time.Time { return m.scheduled })
	if err != nil {
		return r, err
	}
	pickup, err := b.waitUntil(ctx, env.Id, "runner pickup", timeout, func(m *milestones) time.Time { return m.pickup })
	if err != nil {
		return r, err
	}
	running, err := b.waitUntil(ctx, env.Id, "RUNNING", timeout, func(m *milestones) time.Time { return m.running })
	if err != nil {
		return r, err
	}
	r.scheduled, r.pickup, r.running = sched.Sub(t0), pickup.Sub(t0), running.Sub(t0)

	s0 := time.Now()
	if _, err := b.cv.cli(ctx, "ssh", name, "--", "true"); err != nil {
		return r, err
	}
	end := time.Now()
	r.ssh, r.total = end.Sub(s0), end.Sub(t0)
	if _, err := b.cv.cli(ctx, "ssh", name, "--", "true"); err != nil {
		return r, err
	}
	r.ssh2 = time.Since(end)

	if r.steps, err = b.createSteps(ctx, env.Id); err != nil {
		return r, err
	}
	d0 := time.Now()
	if err := b.delete(ctx, env.Id); err != nil {
		return r, err
	}
	r.delete = time.Since(d0)
	return r, nil
}

// createSteps returns the durations of the runner's create steps, waiting
// briefly for the last line.
func (b *bench) createSteps(ctx context.Context, id string) (map[string]time.Duration, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		evs := b.cv.stepsOf(id)
		steps := map[string]time.Duration{}
		for _, e := range evs {
			steps[e.step] += e.took
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

// delete deletes environment id and waits until the runner reports it gone.
func (b *bench) delete(ctx context.Context, id string) error {
	if _, err := b.api.Environments.DeleteEnvironment(ctx, connect.NewRequest(&covev1.DeleteEnvironmentRequest{Id: id})); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	_, err := b.waitUntil(ctx, id, "deletion", 2*time.Minute, func(m *milestones) time.Time { return m.deleted })
	return err
}

// close deletes every environment still listed, then stops the watch.
func (b *bench) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	resp, err := b.api.Environments.ListEnvironments(ctx, connect.NewRequest(&covev1.ListEnvironmentsRequest{}))
	if err != nil {
		progress("cleanup: list environments: %v", err)
	} else {
		for _, e := range resp.Msg.Environments {
			if e.GetStatus().GetPhase() == phaseDeleted {
				continue
			}
			progress("cleanup: deleting environment %s", e.GetMetadata().GetName())
			if err := b.delete(ctx, e.Id); err != nil {
				progress("cleanup: %v", err)
			}
		}
	}
	b.cancel()
	<-b.done
}
