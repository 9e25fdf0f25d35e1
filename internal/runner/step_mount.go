package runner

import (
	"context"
	"fmt"

	"github.com/covedev/cove/internal/idmap"
)

// mountState is the mount step's section.
type mountState struct {
	// WorkspaceOwner is the "uid:gid" inside the environment the
	// workspace was given to ("" or "0:0": root's, as the clone leaves it).
	WorkspaceOwner string `json:"workspaceOwner,omitempty"`
}

// mountStep prepares the root file systems (the environment's and every
// sibling service's) and, the first time, gives the workspace to the
// environment's user.
type mountStep struct {
	images imageStore
	gc     *gcLock
	chown  func(ctx context.Context, root string, m idmap.Range, uid, gid uint32) error
}

func (m mountStep) run(ctx context.Context, e *stepEnv) error {
	e.rep.sub(subMachine, subInProgress, "preparing root filesystem")
	release := m.gc.use() // chowned layer copies (gc.go)
	defer release()
	st := e.st
	if err := m.images.mount(ctx, rootfsConfig(e.lay, st)); err != nil {
		return err
	}
	if err := mountServices(ctx, m.images, e.lay, st); err != nil {
		return err
	}
	uid, gid, err := lookupUser(e.lay.Rootfs(), st.Image.User)
	if err != nil {
		return err
	}
	want := fmt.Sprintf("%d:%d", uid, gid)
	if st.Mount.WorkspaceOwner == want || st.Mount.WorkspaceOwner == "" && want == "0:0" {
		return nil
	}
	if err := m.chown(ctx, e.lay.Workspace(), st.IDMap, uid, gid); err != nil {
		return fmt.Errorf("give workspace to %s: %w", want, err)
	}
	st.Mount.WorkspaceOwner = want
	return nil
}
