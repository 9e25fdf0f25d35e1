package build

import (
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

	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/testutil"
	"github.com/covedev/cove/internal/testutil/testimage"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestRootless: with an IDMap, buildkitd runs as an unprivileged host uid
// (root of its own user namespace) and still builds: RUN steps are never
// host root.
func TestRootless(t *testing.T) {
	testutil.RequireRoot(t, "to set up the user namespace")
	bk := buildkitdPath()
	if bk == "" {
		t.Skip("buildkitd not built: run scripts/build-buildkit.sh (or set COVE_BUILDKITD)")
	}
	bb, err := testimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	registry := testimage.Serve(t, map[string]v1.Image{"test/busybox:latest": bb})
	dir, err := os.MkdirTemp("", "cove-build-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	ids := idmap.Range{HostID: 1_700_000_000 + uint32(rand.IntN(100))*65536, Size: 65536}
	b, err := New(Config{Dir: dir, Buildkitd: bk, InsecureRegistries: []string{registry}, IDMap: ids,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer scancel()
		_ = b.Stop(sctx)
		_ = os.RemoveAll(dir)
	})
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"Dockerfile": "FROM " + registry + "/test/busybox:latest\nRUN id -u > /uid && echo built > /proof\n"})
	var log strings.Builder
	res, err := b.Build(ctx, Request{CacheNamespace: "test", ContextDir: src, OutputDir: filepath.Join(t.TempDir(), "oci"), Log: &log})
	if err != nil {
		blog, _ := os.ReadFile(filepath.Join(dir, "buildkitd.log"))
		t.Fatalf("rootless build: %v\n%s\nbuildkitd log:\n%s", err, log.String(), blog)
	}
	files := imageFiles(t, res.Image)
	if files["/proof"] != "built\n" || files["/uid"] != "0\n" {
		t.Fatalf("built files: /proof %q /uid %q", files["/proof"], files["/uid"])
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) == 0 || f[0] != fmt.Sprint(ids.HostID) {
				t.Fatalf("buildkitd runs as host uid %v, want %d", f, ids.HostID)
			}
		}
	}
}
