package container

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// parentDirs lists the cgroup parent's directories in every hierarchy.
func parentDirs(t *testing.T, parent string) []string {
	t.Helper()
	found, err := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parent))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join("/sys/fs/cgroup", parent)); err == nil && fi.IsDir() {
		found = append(found, filepath.Join("/sys/fs/cgroup", parent))
	}
	return found
}

// TestRemoveCgroupParent is R3 of the 2026-12 review with runc (and R4's
// cap on all environments together): the parent
// directories runc made (in every hierarchy it knows) stay while a
// container runs, and all go once the last container is deleted.
func TestRemoveCgroupParent(t *testing.T) {
	h := newTestHost(t)
	rt := h.runtime(t)
	// R4: environments together are capped below the host's memory.
	const capBytes = 3 << 30
	if err := rt.LimitCgroupParent(capBytes); err != nil {
		t.Fatal(err)
	}
	if got := parentMemoryLimit(t, h.cgroupParent); got != capBytes {
		t.Fatalf("parent memory limit %d, want %d", got, capBytes)
	}
	spec := h.spec(t, "parent")
	startSpec(t, rt, spec)
	if got := parentMemoryLimit(t, h.cgroupParent); got != capBytes {
		t.Fatalf("parent memory limit %d after a start, want %d", got, capBytes)
	}
	made := parentDirs(t, h.cgroupParent)
	if len(made) == 0 {
		t.Fatal("no cgroup parent directories for a running container")
	}
	if removed, err := rt.RemoveCgroupParent(); err != nil || removed {
		t.Fatalf("with a running container: removed %v, %v", removed, err)
	}
	if left := parentDirs(t, h.cgroupParent); len(left) != len(made) {
		t.Fatalf("parent removed from some hierarchies under a running container: %v of %v", left, made)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rt.Delete(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if removed, err := rt.RemoveCgroupParent(); err != nil || !removed {
		t.Fatalf("no containers left: removed %v, %v", removed, err)
	}
	if left := parentDirs(t, h.cgroupParent); len(left) > 0 {
		t.Errorf("left behind: %v (runc made %v)", left, made)
	}
}

// parentMemoryLimit reads the memory limit of the cgroup parent.
func parentMemoryLimit(t *testing.T, parent string) int64 {
	t.Helper()
	for _, f := range []string{filepath.Join("/sys/fs/cgroup/memory", parent, "memory.limit_in_bytes"), filepath.Join("/sys/fs/cgroup", parent, "memory.max")} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			t.Fatalf("%s: %q", f, b)
		}
		return n
	}
	t.Skip("no memory controller")
	return 0
}
