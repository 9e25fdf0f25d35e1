package runner

import (
	"context"
	"os"

	"github.com/covedev/cove/internal/usererr"
)

// prepareStep allocates the environment's uid range and makes its
// directory. It owns the state's header (id and range): the state exists
// from here on.
type prepareStep struct{ ranges *rangeAllocator }

func (p prepareStep) run(_ context.Context, e *stepEnv) error {
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
	return nil
}
