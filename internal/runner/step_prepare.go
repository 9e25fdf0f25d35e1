package runner

import (
	"context"
	"os"

	"github.com/covedev/cove/internal/usererr"
)

// prepareStep allocates the environment's uid range, makes its directory
// and, if its class has a disk limit, its disk (disk.go). It owns the
// state's header (id and range) and its disk section: the state exists
// from here on.
type prepareStep struct {
	ranges *rangeAllocator
	disks  diskQuotas
}

func (p prepareStep) run(ctx context.Context, e *stepEnv) error {
	m, err := p.ranges.allocate(e.id())
	if err != nil {
		return usererr.Wrap(err, "this runner is full: %v", err)
	}
	st := &envState{}
	st.ID, st.IDMap = e.id(), m
	for _, d := range []string{e.lay.Dir, e.lay.Etc()} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			p.ranges.release(m)
			return err
		}
	}
	if err := protectEnvDir(e.lay, st); err != nil {
		p.ranges.release(m)
		return err
	}
	// The loop saves the state (and with it the range) when this returns;
	// a runner killed before that leaves a directory without state, which
	// the next prepare reuses.
	e.st = st
	if size := p.disks[e.env.GetSpec().GetClassId()]; size > 0 {
		// Saved with the state even if making the disk fails: the disk step
		// tries again before anything is written, and a delete removes it.
		if err := makeDisk(ctx, e, size); err != nil {
			return usererr.Wrap(err, "could not make the environment's disk: %v", err)
		}
	}
	return nil
}
