package benchkit

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

// Milestones are the times the bench saw an environment reach each point.
type Milestones struct {
	Scheduled time.Time // metadata.runner_id set
	Pickup    time.Time // first status written by the runner (observed_spec_version ≥ 1)
	Running   time.Time // phase RUNNING for spec version 1
	Deleted   time.Time // phase DELETED
	Failure   string
	changed   chan struct{} // closed and replaced on every change
}

// Envs drives environments through the API and one long watch, opened
// before the first create so that no change is missed.
type Envs struct {
	Cove     *Cove
	API      *apiclient.Clients
	repo     string
	imageRef string
	cancel   context.CancelFunc
	done     chan struct{}

	mu   sync.Mutex
	envs map[string]*Milestones // by id
}

// NewEnvs opens the watch; environments are created from repo (a git URL
// or path) with imageRef as their default image.
func NewEnvs(ctx context.Context, cv *Cove, repo, imageRef string) (*Envs, error) {
	tok, err := cv.Token()
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	b := &Envs{Cove: cv, API: apiclient.New(hc, cv.Server, tok), repo: repo, imageRef: imageRef,
		done: make(chan struct{}), envs: map[string]*Milestones{}}
	// The watch outlives an interrupt of ctx: cleanup waits on it.
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	stream, err := b.API.Environments.WatchEnvironments(wctx, connect.NewRequest(&covev1.WatchEnvironmentsRequest{}))
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
func (b *Envs) track(id string) *Milestones {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.envs[id]
	if m == nil {
		m = &Milestones{changed: make(chan struct{})}
		b.envs[id] = m
	}
	return m
}

// observe records the milestones env shows at time now.
func (b *Envs) observe(now time.Time, env *covev1.Environment) {
	m := b.track(env.Id)
	b.mu.Lock()
	defer b.mu.Unlock()
	st := env.GetStatus()
	if m.Scheduled.IsZero() && env.GetMetadata().GetRunnerId() != "" {
		m.Scheduled = now
	}
	if m.Pickup.IsZero() && st.GetObservedSpecVersion() >= 1 {
		m.Pickup = now
	}
	if m.Running.IsZero() && st.GetPhase() == phaseRunning && st.GetObservedSpecVersion() >= 1 {
		m.Running = now
	}
	if m.Deleted.IsZero() && st.GetPhase() == phaseDeleted {
		m.Deleted = now
	}
	if f := st.GetFailureMessage(); f != "" {
		m.Failure = f
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

// Create creates environment name (optionally of class) and returns its
// id and when the create call returned.
func (b *Envs) Create(ctx context.Context, name, class string) (string, time.Time, error) {
	resp, err := b.API.Environments.CreateEnvironment(ctx, connect.NewRequest(&covev1.CreateEnvironmentRequest{
		Name: name,
		Spec: &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: b.repo}, DefaultImage: b.imageRef, ClassId: class},
	}))
	created := time.Now()
	if err != nil {
		return "", created, fmt.Errorf("create %s: %w", name, err)
	}
	b.observe(created, resp.Msg.Environment)
	return resp.Msg.Environment.Id, created, nil
}

// WaitUntil waits until pick returns a time for environment id.
func (b *Envs) WaitUntil(ctx context.Context, id string, what string, timeout time.Duration, pick func(*Milestones) time.Time) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m := b.track(id)
	for {
		b.mu.Lock()
		t, failure, changed := pick(m), m.Failure, m.changed
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

// WaitRunning waits until environment id is RUNNING and returns when the
// watch saw it.
func (b *Envs) WaitRunning(ctx context.Context, id string, timeout time.Duration) (time.Time, error) {
	return b.WaitUntil(ctx, id, "RUNNING", timeout, func(m *Milestones) time.Time { return m.Running })
}

// Delete deletes environment id and waits until the runner reports it gone.
func (b *Envs) Delete(ctx context.Context, id string) error {
	if _, err := b.API.Environments.DeleteEnvironment(ctx, connect.NewRequest(&covev1.DeleteEnvironmentRequest{Id: id})); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	_, err := b.WaitUntil(ctx, id, "deletion", 2*time.Minute, func(m *Milestones) time.Time { return m.Deleted })
	return err
}

// Close deletes every environment still listed, then stops the watch.
func (b *Envs) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	resp, err := b.API.Environments.ListEnvironments(ctx, connect.NewRequest(&covev1.ListEnvironmentsRequest{}))
	if err != nil {
		Progress("cleanup: list environments: %v", err)
	} else {
		for _, e := range resp.Msg.Environments {
			if e.GetStatus().GetPhase() == phaseDeleted {
				continue
			}
			Progress("cleanup: deleting environment %s", e.GetMetadata().GetName())
			if err := b.Delete(ctx, e.Id); err != nil {
				Progress("cleanup: %v", err)
			}
		}
	}
	b.cancel()
	<-b.done
}

// ID is the id of environment name.
func (b *Envs) ID(ctx context.Context, name string) (string, error) {
	resp, err := b.API.Environments.ListEnvironments(ctx, connect.NewRequest(&covev1.ListEnvironmentsRequest{}))
	if err != nil {
		return "", fmt.Errorf("list environments: %w", err)
	}
	for _, e := range resp.Msg.Environments {
		if e.GetMetadata().GetName() == name && e.GetStatus().GetPhase() != phaseDeleted {
			return e.Id, nil
		}
	}
	return "", fmt.Errorf("no environment named %s", name)
}
