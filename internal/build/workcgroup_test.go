package build

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/testutil"
	"github.com/covedev/cove/internal/testutil/testimage"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// cgroupsOf are the cgroup paths of process pid in the hierarchies with a
// limit controller, by controller ("" on v2).
func cgroupsOf(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			switch {
			case c == "cpu", c == "memory", c == "pids", c == "blkio":
				out[c] = f[2]
			case c == "" && cgroups.Mode() == cgroups.Unified:
				out[""] = f[2]
			}
		}
	}
	return out, nil
}

// within reports whether every limit controller has pid at p or below.
func within(t *testing.T, pid int, p string) bool {
	t.Helper()
	cgs, err := cgroupsOf(pid)
	if err != nil || len(cgs) == 0 {
		return false
	}
	for _, cg := range cgs {
		if cg != p && !strings.HasPrefix(cg, p+"/") {
			return false
		}
	}
	return true
}

// findProcess is the pid of the host process whose command line is argv
// (0: none).
func findProcess(argv ...string) int {
	want := []byte(strings.Join(argv, "\x00") + "\x00")
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && bytes.Equal(b, want) {
			return pid
		}
	}
	return 0
}

// TestBuildInWorkCgroup: with Place, buildkitd runs in the runner's
// limited work cgroup, and so does a RUN step, born there (a build cannot
// take the host from the environments); when the builder stops, the
// cgroup goes.
func TestBuildInWorkCgroup(t *testing.T) {
	testutil.RequireRoot(t, "to create cgroups and run buildkitd")
	testutil.RequireTool(t, "runc")
	bk := buildkitdPath()
	if bk == "" {
		t.Skip("buildkitd not built: run scripts/build-buildkit.sh (or set COVE_BUILDKITD)")
	}
	parent := fmt.Sprintf("cove-buildtest-%d", rand.Uint32())
	work, err := resources.CreateWorkCgroup(parent, "build", resources.Limits{CPUMillis: 500, MemoryBytes: 2 << 30, Pids: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer cancel()
		_ = work.Remove(ctx)
		_ = resources.Remove(ctx, "/"+parent)
	})
	bb, err := testimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	registry := testimage.Serve(t, map[string]v1.Image{"test/busybox:latest": bb})
	dir, err := os.MkdirTemp("", "cove-build-cgroup-")
	if err != nil {
		t.Fatal(err)
	}
	ids := idmap.Range{HostID: 1_700_000_000 + uint32(rand.IntN(100))*65536, Size: 65536}
	b, err := New(Config{Dir: dir, Buildkitd: bk, InsecureRegistries: []string{registry}, IDMap: ids,
		Place: work.Add, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		sctx, scancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer scancel()
		if err := b.Stop(sctx); err != nil {
			t.Errorf("stop buildkitd: %v", err)
		}
	}
	t.Cleanup(func() { stop(); _ = os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(context.Background(), testutil.PatienceUpTo(t, 5*time.Minute))
	defer cancel()
	if err := b.Start(ctx); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "buildkitd.log"))
		t.Fatalf("start: %v\n%s", err, log)
	}
	daemon := b.cmd.Process.Pid
	if !within(t, daemon, work.Path()) {
		cgs, _ := cgroupsOf(daemon)
		t.Fatalf("buildkitd (pid %d) is not in %s: %v", daemon, work.Path(), cgs)
	}

	// A RUN step that waits (the build is cancelled once it has been seen).
	marker := fmt.Sprint(3_000_000 + rand.IntN(1_000_000))
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"Dockerfile": "FROM " + registry + "/test/busybox:latest\nRUN sleep " + marker + "\n"})
	bctx, bcancel := context.WithCancel(ctx)
	built := make(chan error, 1)
	go func() {
		_, err := b.Build(bctx, Request{CacheNamespace: "test", ContextDir: src, OutputDir: filepath.Join(t.TempDir(), "oci")})
		built <- err
	}()
	var step int
	testutil.WaitFor(t, "the RUN step to start", func() bool {
		select {
		case err := <-built:
			t.Fatalf("the build ended before its RUN step was seen: %v", err)
		default:
		}
		step = findProcess("sleep", marker)
		return step != 0
	})
	if !within(t, step, work.Path()) {
		cgs, _ := cgroupsOf(step)
		t.Errorf("the RUN step (pid %d) escaped the work cgroup %s: %v", step, work.Path(), cgs)
	}
	bcancel()
	if err := testutil.Receive(t, built, "the cancelled build to end"); err == nil {
		t.Error("a cancelled build succeeded")
	}
	stop()

	// The limits hold for everything in it, and nothing is left.
	cpu := filepath.Join("/sys/fs/cgroup/cpu", work.Path(), "cpu.cfs_quota_us")
	want := "50000"
	if cgroups.Mode() == cgroups.Unified {
		cpu, want = filepath.Join("/sys/fs/cgroup", work.Path(), "cpu.max"), "50000 100000"
	}
	if got, err := os.ReadFile(cpu); err != nil || strings.TrimSpace(string(got)) != want {
		t.Errorf("%s = %q (%v), want %q", cpu, got, err, want)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer rcancel()
	if err := work.Remove(rctx); err != nil {
		procs, _ := work.Procs()
		t.Fatalf("remove the work cgroup after the builder stopped: %v (processes left: %v)", err, procs)
	}
	if resources.Exists(work.Path()) {
		t.Errorf("%s left", work.Path())
	}
}
