package runner

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/runtime"
)

// parentRuntime is a runtime that counts RemoveCgroupParent calls.
type parentRuntime struct {
	runtime.Runtime
	calls int
	limit int64
}

func (p *parentRuntime) RemoveCgroupParent() (bool, error) { p.calls++; return true, nil }

func (p *parentRuntime) LimitCgroupParent(memoryBytes int64) error { p.limit = memoryBytes; return nil }

// TestRemoveCgroupParentOnlyWithoutEnvironments is R3 of the 2026-12
// review, the runner's side: a runner stopping with no environments left
// removes its cgroup parent; with environments on disk (they keep running
// across the restart) it leaves it.
func TestRemoveCgroupParentOnlyWithoutEnvironments(t *testing.T) {
	dir := t.TempDir()
	rt := &parentRuntime{}
	r := &Runner{cfg: Config{DataDir: dir}, log: slog.New(slog.DiscardHandler), rt: rt}
	if err := os.MkdirAll(filepath.Join(dir, "envs", "e1"), 0o711); err != nil {
		t.Fatal(err)
	}
	r.janitor().removeCgroupParent()
	if rt.calls != 0 {
		t.Fatal("cgroup parent removed while an environment exists")
	}
	if err := os.Remove(filepath.Join(dir, "envs", "e1")); err != nil {
		t.Fatal(err)
	}
	r.janitor().removeCgroupParent()
	if rt.calls != 1 {
		t.Fatalf("cgroup parent removal called %d times with no environments, want 1", rt.calls)
	}
}

// TestLimitEnvironmentsMemory is R4 of the 2026-12 review, the runner's
// side: all environments together are capped at the host's memory less the
// reserve, so no number of busy environments reaches the runner's share.
func TestLimitEnvironmentsMemory(t *testing.T) {
	rt := &parentRuntime{}
	r := &Runner{log: slog.New(slog.DiscardHandler), rt: rt}
	r.janitor().limitEnvironmentsMemory()
	host := memTotal()
	if want := host - resources.HostReserve(host); rt.limit != want || want <= 0 || want >= host {
		t.Errorf("environments capped at %d bytes of %d, want %d", rt.limit, host, want)
	}
}
