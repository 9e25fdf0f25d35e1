package netenv

import (
	"fmt"
	"github.com/covedev/cove/internal/resources"
	"os/exec"
	"runtime"

	"github.com/vishvananda/netns"
)

// StartIn starts cmd in the network namespace at path ("" = the caller's):
// the child is forked from a thread that entered the namespace, and
// inherits it. The runner uses it for work done on an environment's behalf
// (clones, Dockerfile builds) so it gets that environment's network rules.
func StartIn(path string, cmd *exec.Cmd) error {
	if path == "" {
		return resources.StartChild(cmd) // in the runner's home cgroup
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return // the thread stays locked and is discarded
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("network namespace %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		err = resources.StartChild(cmd)
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
