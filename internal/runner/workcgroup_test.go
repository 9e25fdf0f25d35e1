package runner

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/testutil"
)

// TestStopRemovesLeftWorkCgroup: the builder's work cgroup that an
// earlier, killed runner process left is removed when this one stops,
// though it never built anything; the cgroup parent can then go too.
func TestStopRemovesLeftWorkCgroup(t *testing.T) {
	testutil.RequireRoot(t, "to create cgroups")
	if cgroups.Mode() == cgroups.Unavailable {
		t.Skip("no cgroup hierarchy mounted")
	}
	parent := fmt.Sprintf("cove-worktest-%d", rand.Uint32())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer cancel()
		for _, p := range []string{resources.WorkCgroupPath(parent, "build"), "/" + parent + "/" + resources.WorkDir, "/" + parent} {
			_ = resources.Remove(ctx, p)
		}
	})
	if _, err := resources.CreateWorkCgroup(parent, "build", resources.Limits{CPUMillis: 1000}); err != nil {
		t.Fatal(err)
	}
	bs := &builders{cfg: Config{CgroupParent: parent}, log: slog.Default()}
	bs.stop()
	for _, p := range []string{resources.WorkCgroupPath(parent, "build"), "/" + parent + "/" + resources.WorkDir} {
		if resources.Exists(p) {
			t.Errorf("%s left after the runner stopped", p)
		}
	}
}
