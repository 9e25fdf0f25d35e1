package resources

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/covedev/cove/internal/testutil"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCgroupPath(t *testing.T) {
	for _, c := range []struct{ parent, id, want string }{
		{"cove", "env1", "/cove/env1"},
		{"/cove/", "env1", "/cove/env1"},
		{"a/b", "x", "/a/b/x"},
	} {
		if got := CgroupPath(c.parent, c.id); got != c.want {
			t.Errorf("CgroupPath(%q, %q) = %q, want %q", c.parent, c.id, got, c.want)
		}
	}
}

func TestRemoveRefusesRoot(t *testing.T) {
	for _, p := range []string{"", "/", "//"} {
		if err := Remove(context.Background(), p); err == nil {
			t.Errorf("Remove(%q) succeeded", p)
		}
	}
}

// newCgroup creates a cgroup at a fresh path in every hierarchy and returns
// the path and a function that adds a pid to it.
func newCgroup(t *testing.T) (string, func(pid int)) {
	t.Helper()
	testutil.RequireRoot(t, "to create cgroups")
	parent := fmt.Sprintf("cove-restest-%d", rand.Uint32())
	p := CgroupPath(parent, "env")
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer cancel()
		_ = Remove(c, p)
		if err := Remove(c, "/"+parent); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	switch cgroups.Mode() {
	case cgroups.Unified:
		m, err := cgroup2.NewManager("/sys/fs/cgroup", p, &cgroup2.Resources{})
		if err != nil {
			t.Fatal(err)
		}
		return p, func(pid int) {
			if err := m.AddProc(uint64(pid)); err != nil {
				t.Fatal(err)
			}
		}
	case cgroups.Legacy, cgroups.Hybrid:
		cg, err := cgroup1.New(cgroup1.StaticPath(p), &specs.LinuxResources{})
		if err != nil {
			t.Fatal(err)
		}
		if cgroups.Mode() == cgroups.Hybrid {
			if err := os.MkdirAll(filepath.Join(hybridUnified, p), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return p, func(pid int) {
			if err := cg.Add(cgroup1.Process{Pid: pid}); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Skip("no cgroup hierarchy mounted")
	return "", nil
}

func TestExistsAndRemove(t *testing.T) {
	p, _ := newCgroup(t)
	if !Exists(p) {
		t.Fatalf("Exists(%s) = false after creating it", p)
	}
	if err := Remove(context.Background(), p); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if Exists(p) {
		t.Errorf("Exists(%s) = true after Remove", p)
	}
	matches, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", p))
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", p)); err == nil {
		matches = append(matches, filepath.Join("/sys/fs/cgroup", p))
	}
	if len(matches) > 0 {
		t.Errorf("directories left: %v", matches)
	}
	if err := Remove(context.Background(), p); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestRemoveWaitsForExitingProcesses(t *testing.T) {
	p, add := newCgroup(t)
	// It lives until the test kills it below: not a sleep that might end
	// before the first Remove on a loaded machine.
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	add(cmd.Process.Pid)

	// A short deadline fails while the process lives...
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := Remove(short, p); err == nil {
		t.Fatal("Remove of a cgroup with a running process succeeded")
	}
	if !Exists(p) {
		t.Fatal("cgroup with a running process was removed")
	}
	// ...a longer one succeeds once it has exited.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	long, cancel2 := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel2()
	if err := Remove(long, p); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if Exists(p) {
		t.Error("cgroup exists after Remove")
	}
}
