package build

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/covedev/cove/internal/testutil"
	"github.com/covedev/cove/internal/testutil/testimage"
	"github.com/covedev/cove/internal/usererr"
)

// plantDockerfile writes into an explicitly named cache mount and into one
// named by its target (the default id), as an attacker planting artifacts
// in a shared Maven or Go cache would.
const plantDockerfile = `FROM {{BASE}}
RUN --mount=type=cache,id=shared,target=/c1 --mount=type=cache,target=/root/.m2 \
    sh -c 'echo planted > /c1/payload && echo planted > /root/.m2/payload'
`

// probeDockerfile records what a build finds in the same cache mounts.
const probeDockerfile = `FROM {{BASE}}
RUN --mount=type=cache,id=shared,target=/c1 --mount=type=cache,target=/root/.m2 \
    sh -c '(cat /c1/payload || echo none) > /seen-id; (cat /root/.m2/payload || echo none) > /seen-target'
`

// S1: two organizations' builds on one buildkitd use the same cache-mount
// ids; neither sees the other's files, while builds of one organization do
// share them. A repository cannot pick another organization's namespace.
func TestCacheMountsPerOrganization(t *testing.T) {
	bb, err := testimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	registry := testimage.Serve(t, map[string]v1.Image{"test/busybox:latest": bb})
	base := registry + "/test/busybox:latest"
	b := startBuilder(t, registry)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	build := func(ns, dockerfile string, args map[string]string) (map[string]string, error) {
		src := t.TempDir()
		writeFiles(t, src, map[string]string{"Dockerfile": strings.ReplaceAll(dockerfile, "{{BASE}}", base)})
		var log bytes.Buffer
		res, err := b.Build(ctx, Request{CacheNamespace: ns, ContextDir: src, Args: args, OutputDir: filepath.Join(t.TempDir(), "oci"), Log: &log})
		if err != nil {
			return nil, err
		}
		return imageFiles(t, res.Image), nil
	}
	if _, err := build("org-mallory", plantDockerfile, nil); err != nil {
		t.Fatalf("plant: %v", err)
	}

	// Another organization: nothing planted is visible.
	files, err := build("org-alice", probeDockerfile, nil)
	if err != nil {
		t.Fatalf("probe as another organization: %v", err)
	}
	if files["/seen-id"] != "none\n" || files["/seen-target"] != "none\n" {
		t.Errorf("another organization's build read the planted cache: id=%q target=%q", files["/seen-id"], files["/seen-target"])
	}

	// The attacker's repository names the victim's namespace (or its own,
	// to plant there): refused before anything runs.
	for _, arg := range []string{"BUILDKIT_CACHE_MOUNT_NS", "buildkit_cache_mount_ns", "BUILDKIT_SYNTAX"} {
		_, err := build("org-mallory", plantDockerfile, map[string]string{arg: "org-alice"})
		if msg, ok := usererr.Message(err); !ok || !strings.Contains(msg, arg) {
			t.Errorf("build arg %s: %v, want it refused", arg, err)
		}
	}

	// The same organization shares its cache mounts.
	files, err = build("org-mallory", probeDockerfile, nil)
	if err != nil {
		t.Fatalf("probe as the same organization: %v", err)
	}
	if files["/seen-id"] != "planted\n" || files["/seen-target"] != "planted\n" {
		t.Errorf("same organization's build: id=%q target=%q, want the planted files", files["/seen-id"], files["/seen-target"])
	}
	// And alice's own cache is still untouched. (The probe is changed by a
	// space so that its step runs again instead of coming from the cache.)
	files, err = build("org-alice", strings.Replace(probeDockerfile, "> /seen-id", "> /seen-id ", 1), nil)
	if err != nil {
		t.Fatalf("second probe as another organization: %v", err)
	}
	if files["/seen-id"] != "none\n" || files["/seen-target"] != "none\n" {
		t.Errorf("victim's cache changed: id=%q target=%q", files["/seen-id"], files["/seen-target"])
	}
}

// Requests without a namespace, or with BUILDKIT_* args, are refused before
// buildkitd is involved.
func TestBuildRefusesBadRequests(t *testing.T) {
	testutil.RequireTool(t, "runc") // New needs it
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A Builder whose "buildkitd" must never start: this test binary.
	b, err := New(Config{Dir: t.TempDir(), Buildkitd: self, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := Request{ContextDir: t.TempDir(), OutputDir: t.TempDir()}
	for _, ns := range []string{"", "org/other", "org:x", strings.Repeat("a", 129)} {
		req.CacheNamespace = ns
		if _, err := b.Build(ctx, req); err == nil || !strings.Contains(err.Error(), "cache namespace") {
			t.Errorf("namespace %q: %v", ns, err)
		}
	}
	req.CacheNamespace = "org-a"
	req.Args = map[string]string{"VERSION": "1", "BUILDKIT_CACHE_MOUNT_NS": "org-b"}
	_, err = b.Build(ctx, req)
	if msg, ok := usererr.Message(err); !ok || !strings.Contains(msg, `"BUILDKIT_CACHE_MOUNT_NS" is refused`) {
		t.Errorf("BUILDKIT_CACHE_MOUNT_NS: %v", err)
	}
	if b.cmd != nil {
		t.Error("buildkitd was started for a refused request")
	}
}

// S1: build.cacheFrom would import a registry's claimed step results into
// the shared cache; unless the operator allows it, the registry is never
// asked and the build log says why.
func TestCacheFromIgnoredUnlessAllowed(t *testing.T) {
	var hits atomic.Int32
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}`)
	}))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	b := startBuilder(t, host)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	build := func(marker string) string {
		src := t.TempDir()
		writeFiles(t, src, map[string]string{"Dockerfile": "FROM scratch\nCOPY f /f\n", "f": marker})
		var log bytes.Buffer
		_, err := b.Build(ctx, Request{CacheNamespace: "org-a", ContextDir: src, CacheFrom: []string{host + "/poison/cache:latest"},
			OutputDir: filepath.Join(t.TempDir(), "oci"), Log: &log})
		if err != nil {
			t.Fatalf("build: %v\n%s", err, log.String())
		}
		return log.String()
	}
	if log := build("one"); !strings.Contains(log, "build.cacheFrom ignored") {
		t.Errorf("no warning in the build log:\n%s", log)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the cacheFrom registry was asked %d times", n)
	}

	// Allowed by the operator, BuildKit does ask it.
	b.cfg.AllowCacheFrom = true
	if log := build("two"); strings.Contains(log, "build.cacheFrom ignored") {
		t.Errorf("warning although allowed:\n%s", log)
	}
	if hits.Load() == 0 {
		t.Fatal("allowed cacheFrom registry was not asked")
	}
}
