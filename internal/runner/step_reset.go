package runner

import (
	"context"
	"fmt"
	"os"

	"github.com/covedev/cove/internal/envconfig"
)

// rebuildState is the reset step's section.
type rebuildState struct {
	// Generation is the rebuild generation the container file system is
	// (being) built from.
	Generation int64 `json:"generation,omitempty"`
}

// resetStep discards the container's file system (the overlay upper and
// work dirs, every service's) so that it is built again from the image and
// devcontainer.json; the workspace stays. It records the new generation
// and drops what was resolved and run for the old file system (the image,
// features and lifecycle sections), first: a runner killed half-way
// through continues with a fresh build.
type resetStep struct{}

func (resetStep) run(_ context.Context, e *stepEnv) error {
	e.rep.sub(subMachine, subInProgress, "rebuilding")
	lay, st := e.lay, e.st
	if err := unstageEnvironment(lay); err != nil {
		return err
	}
	dirs := []string{lay.Upper(), lay.Work(), lay.Services()}
	if lay.HasDisk() {
		dirs = append(dirs, lay.ServicesData()) // the services' upper dirs, on the disk
	}
	for _, d := range dirs {
		if err := checkNoMounts(d); err != nil {
			return err
		}
	}
	st.Rebuild.Generation = e.env.GetSpec().GetRebuildGeneration()
	st.Image, st.Features, st.Lifecycle = envconfig.Resolved{Ref: st.Image.Ref}, featuresState{}, lifecycleState{}
	if err := saveState(lay.State(), st); err != nil { // before anything is removed
		return err
	}
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("reset %s: %w", d, err)
		}
	}
	return nil
}
