package resources

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/testutil"
)

func TestRemoveParentRefusesRoot(t *testing.T) {
	for _, p := range []string{"", "/", "//", "..", "../cove", "a/../..", "cove/../../x"} {
		if _, err := RemoveParent(p); err == nil {
			t.Errorf("RemoveParent(%q) succeeded", p)
		}
	}
}

// cgroupTree makes dirs (relative cgroup paths, parents first) in every
// hierarchy, as runc does for environments, and removes whatever is left
// of them at the end.
func cgroupTree(t *testing.T, dirs ...string) []string {
	t.Helper()
	testutil.RequireRoot(t, "to create cgroups")
	mounts, err := hierarchyMounts()
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) == 0 {
		t.Skip("no cgroup hierarchy mounted")
	}
	t.Cleanup(func() {
		for _, m := range mounts {
			for i := len(dirs) - 1; i >= 0; i-- {
				if err := os.Remove(filepath.Join(m, dirs[i])); err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Errorf("cleanup: %v", err)
				}
			}
		}
	})
	for _, m := range mounts {
		for _, d := range dirs {
			if err := os.Mkdir(filepath.Join(m, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	return mounts
}

// procsHierarchy is a hierarchy a process can join without setting up
// controller files first (unlike v1 cpuset).
func procsHierarchy(t *testing.T, mounts []string) string {
	for _, m := range mounts {
		if !strings.Contains(filepath.Base(m), "cpuset") {
			return m
		}
	}
	t.Skip("no hierarchy a process can join")
	return ""
}

// startIn starts a process in the cgroup dir and stops it at the end.
func startIn(t *testing.T, dir string) func() {
	t.Helper()
	cmd := exec.Command("sleep", "3600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(stop)
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	return stop
}

func leftIn(mounts []string, p string) []string {
	var out []string
	for _, m := range mounts {
		if _, err := os.Lstat(filepath.Join(m, p)); err == nil {
			out = append(out, filepath.Join(m, p))
		}
	}
	return out
}

// TestRemoveParent is R3 of the 2026-12 review: after a clean shutdown
// with no environments left, the runner's cgroup parent stayed in every v1
// hierarchy. RemoveParent removes it everywhere, but never while an
// environment's cgroup or a process is below it.
func TestRemoveParent(t *testing.T) {
	parent := fmt.Sprintf("cove-r3test-%d", rand.Uint32())
	env := parent + "/env1"
	mounts := cgroupTree(t, parent, env)
	stopEnv := startIn(t, filepath.Join(procsHierarchy(t, mounts), env))

	// A running environment: nothing is removed, in any hierarchy.
	if removed, err := RemoveParent(parent); err != nil || removed {
		t.Fatalf("with an environment: removed %v, %v", removed, err)
	}
	if left := leftIn(mounts, env); len(left) != len(mounts) {
		t.Fatalf("environment cgroups touched: %d of %d left", len(left), len(mounts))
	}

	// Its cgroup gone but a process in the parent itself: still kept.
	stopEnv()
	for _, m := range mounts {
		if err := os.Remove(filepath.Join(m, env)); err != nil {
			t.Fatal(err)
		}
	}
	stop := startIn(t, filepath.Join(procsHierarchy(t, mounts), parent))
	if removed, err := RemoveParent(parent); err != nil || removed {
		t.Fatalf("with a process: removed %v, %v", removed, err)
	}
	if left := leftIn(mounts, parent); len(left) != len(mounts) {
		t.Fatalf("parent removed from some hierarchies while in use: %d of %d left", len(left), len(mounts))
	}

	stop()
	if removed, err := RemoveParent(parent); err != nil || !removed {
		t.Fatalf("unused parent: removed %v, %v", removed, err)
	}
	if left := leftIn(mounts, parent); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	// Gone already: fine.
	if removed, err := RemoveParent(parent); err != nil || !removed {
		t.Errorf("second call: removed %v, %v", removed, err)
	}
}

// TestRemoveParentKeepsAncestors: of a nested parent ("a/b"), only b goes;
// a may hold other things.
func TestRemoveParentKeepsAncestors(t *testing.T) {
	outer := fmt.Sprintf("cove-r3test-%d", rand.Uint32())
	inner := outer + "/runner"
	mounts := cgroupTree(t, outer, inner)
	if removed, err := RemoveParent(inner); err != nil || !removed {
		t.Fatalf("removed %v, %v", removed, err)
	}
	if left := leftIn(mounts, inner); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	if left := leftIn(mounts, outer); len(left) != len(mounts) {
		t.Errorf("an ancestor was removed: %d of %d left", len(left), len(mounts))
	}
}
