package resources

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/testutil"
)

// testParent returns a fresh cgroup parent path, removed (with everything
// below it that the test left) when the test ends.
func testParent(t *testing.T, below ...string) string {
	t.Helper()
	testutil.RequireRoot(t, "to create cgroups")
	if cgroups.Mode() == cgroups.Unavailable {
		t.Skip("no cgroup hierarchy mounted")
	}
	parent := fmt.Sprintf("/cove-restest-%d", rand.Uint32())
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer cancel()
		for i := len(below) - 1; i >= 0; i-- {
			_ = Remove(c, filepath.Join(parent, below[i]))
		}
		if err := Remove(c, parent); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return parent
}

// limitFile returns the content of the file holding limit (cpu, memory or
// pids) of cgroup p.
func limitFile(t *testing.T, p, limit string) string {
	t.Helper()
	var f string
	if cgroups.Mode() == cgroups.Unified {
		f = filepath.Join(cgroupRoot, p, map[string]string{"cpu": "cpu.max", "memory": "memory.max", "pids": "pids.max"}[limit])
	} else {
		f = filepath.Join(cgroupRoot, limit, p, map[string]string{"cpu": "cpu.cfs_quota_us", "memory": "memory.limit_in_bytes", "pids": "pids.max"}[limit])
	}
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func wantLimits(t *testing.T, p string, cpu, mem, pids string) {
	t.Helper()
	for _, c := range []struct{ limit, want string }{{"cpu", cpu}, {"memory", mem}, {"pids", pids}} {
		if got := limitFile(t, p, c.limit); got != c.want {
			t.Errorf("%s limit of %s = %q, want %q", c.limit, p, got, c.want)
		}
	}
}

func TestCreateSetsAndUpdatesLimits(t *testing.T) {
	g := testParent(t, "group") + "/group"
	if err := Create(g, Limits{CPUMillis: 1500, MemoryBytes: 256 << 20, Pids: 321}); err != nil {
		t.Fatal(err)
	}
	if !Exists(g) {
		t.Fatalf("Exists(%s) = false after Create", g)
	}
	unified := cgroups.Mode() == cgroups.Unified
	if unified {
		wantLimits(t, g, "150000 100000", fmt.Sprint(256<<20), "321")
	} else {
		wantLimits(t, g, "150000", fmt.Sprint(256<<20), "321")
	}

	// Again on the existing cgroup: new limits replace the old ones.
	if err := Create(g, Limits{CPUMillis: 500, MemoryBytes: 128 << 20, Pids: 100}); err != nil {
		t.Fatalf("second Create: %v", err)
	}
	if unified {
		wantLimits(t, g, "50000 100000", fmt.Sprint(128<<20), "100")
	} else {
		wantLimits(t, g, "50000", fmt.Sprint(128<<20), "100")
	}

	// Zero limits lift them.
	if err := Create(g, Limits{}); err != nil {
		t.Fatalf("Create without limits: %v", err)
	}
	if unified {
		wantLimits(t, g, "max 100000", "max", "max")
	} else {
		wantLimits(t, g, "-1", limitFile(t, filepath.Dir(g), "memory"), "max")
	}
}

func TestCreateRefusesRoot(t *testing.T) {
	for _, p := range []string{"", "/", "//"} {
		if err := Create(p, Limits{Pids: 10}); err == nil {
			t.Errorf("Create(%q) succeeded", p)
		}
	}
}

func TestRemoveIfUnused(t *testing.T) {
	parent := testParent(t, "group", "group/member")
	g, m := parent+"/group", parent+"/group/member"
	if err := Create(g, Limits{Pids: 50}); err != nil {
		t.Fatal(err)
	}
	if err := Create(m, Limits{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()

	if used, err := InUse(g); err != nil || !used {
		t.Fatalf("InUse(group with a member) = %v, %v", used, err)
	}
	removed, err := RemoveIfUnused(ctx, g)
	if err != nil || removed {
		t.Fatalf("RemoveIfUnused(group with a member) = %v, %v; want false, nil", removed, err)
	}
	if !Exists(g) || !Exists(m) {
		t.Fatal("RemoveIfUnused removed a group in use or its member")
	}

	if err := Remove(ctx, m); err != nil {
		t.Fatal(err)
	}
	removed, err = RemoveIfUnused(ctx, g)
	if err != nil || !removed {
		t.Fatalf("RemoveIfUnused(empty group) = %v, %v; want true, nil", removed, err)
	}
	if Exists(g) {
		t.Error("empty group still exists after RemoveIfUnused")
	}
	if removed, err := RemoveIfUnused(ctx, g); err != nil || !removed {
		t.Errorf("RemoveIfUnused(absent) = %v, %v; want true, nil", removed, err)
	}
}

func TestInUseByProcess(t *testing.T) {
	p, add := newCgroup(t)
	if used, err := InUse(p); err != nil || used {
		t.Fatalf("InUse(empty) = %v, %v", used, err)
	}
	cmd := exec.Command("sleep", "100")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	add(cmd.Process.Pid)
	if used, err := InUse(p); err != nil || !used {
		t.Fatalf("InUse(with a process) = %v, %v", used, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	if removed, err := RemoveIfUnused(ctx, p); err != nil || removed {
		t.Fatalf("RemoveIfUnused(with a process) = %v, %v; want false, nil", removed, err)
	}
	if !Exists(p) {
		t.Fatal("cgroup with a process was removed")
	}
}

// TestCreateV2WithoutControllers runs the cgroup v2 path against the empty
// unified hierarchy of a hybrid host: the cgroup is created, but limits for
// controllers the hierarchy lacks are refused.
func TestCreateV2WithoutControllers(t *testing.T) {
	if cgroups.Mode() != cgroups.Hybrid {
		t.Skip("needs a hybrid cgroup host")
	}
	parent := testParent(t, "group")
	g := parent + "/group"
	if err := createV2(hybridUnified, g, Limits{Pids: 10}); err == nil || !strings.Contains(err.Error(), "pids controller") {
		t.Errorf("createV2 with a pids limit and no pids controller: %v", err)
	}
	if err := createV2(hybridUnified, g, Limits{}); err != nil {
		t.Fatalf("createV2: %v", err)
	}
	if !dirExists(filepath.Join(hybridUnified, g)) {
		t.Fatal("createV2 did not create the cgroup")
	}
	if err := createV2(hybridUnified, g, Limits{}); err != nil {
		t.Errorf("second createV2: %v", err)
	}
}
