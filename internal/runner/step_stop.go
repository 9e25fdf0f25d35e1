package runner

import (
	"context"
	"errors"
	"time"

	"github.com/covedev/cove/internal/runtime"
)

// stopStep stops the environment's containers: SIGTERM, then SIGKILL after
// the grace period; sibling services after the dev container, dependents
// first. It owns no state.
type stopStep struct {
	rt    runtime.Runtime
	grace time.Duration
}

func (s stopStep) run(ctx context.Context, e *stepEnv) error {
	e.rep.sub(subMachine, subInProgress, "stopping")
	return errors.Join(s.rt.Stop(ctx, e.id(), s.grace), stopServices(ctx, s.rt, s.grace, e.id(), e.st))
}

// deleteStep removes the stopped containers' runtime state and cgroups.
// It owns no state.
type deleteStep struct{ rt runtime.Runtime }

func (d deleteStep) run(ctx context.Context, e *stepEnv) error {
	return errors.Join(d.rt.Delete(ctx, e.id()), deleteServices(ctx, d.rt, e.id(), e.st))
}
