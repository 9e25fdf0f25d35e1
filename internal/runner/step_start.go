package runner

import (
	"context"
	"log/slog"

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/runtime"
)

// startState is the start step's section.
type startState struct {
	// StartedOnce: the environment started at least once (CREATING vs
	// STARTING).
	StartedOnce bool `json:"startedOnce,omitempty"`
}

// startStep starts the environment's containers: a Compose project's
// services that come before the dev service, the dev container with its
// agent, then the rest.
type startStep struct {
	rt          runtime.Runtime
	net         envNet
	keys        *agentKeys
	agentBinary string // mounted at /.cove/bin/cove
	classes     classes
	limits      classLimits // memory reclaim, swap and IO limits by class
	log         *slog.Logger
	// stager stages one container's bind sources (newStager).
	stager func(workspace, dir string) (binder, error)
}

// binder gives a directory of the workspace a staging point the runtime
// can mount (stage.go).
type binder interface {
	stage(rel string, how confine.Resolve, what string) (string, error)
}

func (m *startStep) run(ctx context.Context, e *stepEnv) error {
	e.rep.sub(subMachine, subInProgress, "starting")
	e.st.Backup.Dirty = true // step_backup.go: the next stop backs up
	if err := m.start(ctx, e, func(msg string) { e.rep.sub(subMachine, subInProgress, msg) }); err != nil {
		return err
	}
	e.st.Start.StartedOnce = true
	return nil
}
