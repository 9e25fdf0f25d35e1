package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// removeStep deletes the environment's disk state, releases its network
// and frees its uid range. It refuses to cross into anything still
// mounted (shared image layers). Afterwards there is no state.
type removeStep struct {
	net    envNet
	images imageStore
	ranges *rangeAllocator
	log    logger
}

func (r removeStep) run(ctx context.Context, e *stepEnv) error {
	if err := r.net.detach(ctx, e.id()); err != nil {
		return err
	}
	if err := unstageEnvironment(e.lay); err != nil {
		return err
	}
	// The overlays and the layers' views below them, whatever the plan
	// saw (a runner that died between unmounting the overlay and its
	// lower views leaves only the latter).
	if err := errors.Join(r.images.unmount(ctx, rootfsConfig(e.lay, e.st)), unmountServices(ctx, r.images, e.lay, e.st)); err != nil {
		return err
	}
	// The disk (disk.go), whatever the state says: a prepare killed before
	// it saved the state may have made one. Its image goes with the
	// directory.
	if err := unmountDisk(e.lay, r.log); err != nil {
		return err
	}
	if err := checkNoMounts(e.lay.Dir); err != nil {
		return err
	}
	if err := os.RemoveAll(e.lay.Dir); err != nil {
		return fmt.Errorf("remove %s: %w", e.lay.Dir, err)
	}
	if e.st != nil {
		r.ranges.release(e.st.IDMap)
		e.st = nil // nothing left to save
	}
	return nil
}
