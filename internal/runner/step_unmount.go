package runner

import (
	"context"
	"errors"
)

// unmountStep takes down the root file systems (the overlays and the
// layers' views below them) and the staged bind mounts. It owns no state.
type unmountStep struct{ images imageStore }

func (u unmountStep) run(ctx context.Context, e *stepEnv) error {
	return errors.Join(unstageEnvironment(e.lay), u.images.unmount(ctx, rootfsConfig(e.lay, e.st)), unmountServices(ctx, u.images, e.lay, e.st))
}
