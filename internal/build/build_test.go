package build

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/covedev/cove/internal/testutil"
	"github.com/covedev/cove/internal/testutil/testimage"
	"github.com/covedev/cove/internal/usererr"
)

// buildkitdPath finds buildkitd: $COVE_BUILDKITD, scripts/build-buildkit.sh's
// cache, or PATH.
func buildkitdPath() string {
	if p := os.Getenv("COVE_BUILDKITD"); p != "" {
		return p
	}
	if _, err := os.Stat(DefaultBuildkitd); err == nil {
		return DefaultBuildkitd
	}
	p, _ := exec.LookPath("buildkitd")
	return p
}

// startBuilder starts a buildkitd for the test that trusts the loopback
// registries given. It skips when root, runc or buildkitd are missing.
func startBuilder(t *testing.T, registries ...string) *Builder {
	t.Helper()
	testutil.RequireRoot(t, "to run buildkitd")
	testutil.RequireTool(t, "runc")
	bk := buildkitdPath()
	if bk == "" {
		t.Skip("buildkitd not built: run scripts/build-buildkit.sh (or set COVE_BUILDKITD)")
	}
	dir, err := os.MkdirTemp("", "cove-build-test-")
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{
		Dir:                dir,
		Buildkitd:          bk,
		InsecureRegistries: registries,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "buildkitd.log"))
		t.Skipf("buildkitd does not start here: %v\n%s", err, log)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Errorf("stop buildkitd: %v", err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove buildkitd dir (mounts left?): %v", err)
		}
	})
	if err := b.Healthy(ctx); err != nil {
		t.Fatalf("Healthy after Start: %v", err)
	}
	return b
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// imageFiles returns the regular files of img's flattened filesystem.
func imageFiles(t *testing.T, img v1.Image) map[string]string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files["/"+strings.TrimPrefix(h.Name, "/")] = string(data)
		}
	}
}

const stagesDockerfile = `FROM {{BASE}} AS base
ARG GREETING=hello
RUN echo "$GREETING" > /greeting && echo ran-base-step | tr a-z A-Z
COPY app.txt /app/app.txt

FROM base AS dev
RUN echo dev-stage > /stage && echo ran-dev-step | tr a-z A-Z

FROM base AS prod
RUN echo prod-stage > /stage
`

func TestBuild(t *testing.T) {
	bb, err := testimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	registry := testimage.Serve(t, map[string]v1.Image{"test/busybox:latest": bb})
	base := registry + "/test/busybox:latest"
	b := startBuilder(t, registry)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	t.Run("StagesArgsAndCache", func(t *testing.T) {
		src := t.TempDir()
		// The Dockerfile lives outside the context, as with devcontainer.json's
		// build.dockerfile next to a context of "..".
		dfDir := filepath.Join(src, ".devcontainer")
		writeFiles(t, src, map[string]string{
			"app.txt":                  "app content\n",
			".devcontainer/Dockerfile": strings.ReplaceAll(stagesDockerfile, "{{BASE}}", base),
		})
		req := Request{
			CacheNamespace: "test",
			ContextDir:     src,
			Dockerfile:     filepath.Join(dfDir, "Dockerfile"),
			Target:         "dev",
			Args:           map[string]string{"GREETING": "bonjour"},
			OutputDir:      filepath.Join(t.TempDir(), "oci"),
		}
		var log1 bytes.Buffer
		req.Log = &log1
		start := time.Now()
		res, err := b.Build(ctx, req)
		if err != nil {
			t.Fatalf("build: %v\n%s", err, log1.String())
		}
		t.Logf("first build: %v", time.Since(start))
		files := imageFiles(t, res.Image)
		for path, want := range map[string]string{
			"/greeting":    "bonjour\n",
			"/stage":       "dev-stage\n",
			"/app/app.txt": "app content\n",
		} {
			if got, ok := files[path]; !ok || got != want {
				t.Errorf("%s = %q (present %v), want %q", path, got, ok, want)
			}
		}
		if _, ok := files["/bin/busybox"]; !ok {
			t.Errorf("base image content /bin/busybox missing from result")
		}
		if !strings.Contains(log1.String(), "RAN-DEV-STEP") {
			t.Errorf("progress log lacks RUN output:\n%s", log1.String())
		}
		// The layout is a valid OCI layout holding the same image.
		p, err := layout.FromPath(res.Layout)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := p.ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := idx.Image(res.Digest); err != nil {
			t.Errorf("layout lacks image %s: %v", res.Digest, err)
		}

		// Identical second build: every step comes from the cache.
		var log2 bytes.Buffer
		req.Log = &log2
		req.OutputDir = filepath.Join(t.TempDir(), "oci")
		start = time.Now()
		res2, err := b.Build(ctx, req)
		if err != nil {
			t.Fatalf("second build: %v\n%s", err, log2.String())
		}
		t.Logf("cached build: %v", time.Since(start))
		out := log2.String()
		if strings.Contains(out, "RAN-BASE-STEP") || strings.Contains(out, "RAN-DEV-STEP") {
			t.Errorf("second build ran RUN steps again:\n%s", out)
		}
		if n := strings.Count(out, "CACHED"); n < 3 { // 2 RUN + 1 COPY
			t.Errorf("second build: %d CACHED steps, want >= 3:\n%s", n, out)
		}
		if res2.Digest != res.Digest {
			t.Errorf("cached build digest %s, first %s", res2.Digest, res.Digest)
		}

		// A changed line rebuilds from that step: the base RUN stays cached,
		// the dev RUN runs again. (Markers are upper-cased by the RUN so that
		// step names, which the log also shows, do not match.)
		writeFiles(t, src, map[string]string{".devcontainer/Dockerfile": strings.Replace(
			strings.ReplaceAll(stagesDockerfile, "{{BASE}}", base), "echo dev-stage", "echo dev-stage-2", 1)})
		var log3 bytes.Buffer
		req.Log = &log3
		res3, err := b.Build(ctx, req)
		if err != nil {
			t.Fatalf("third build: %v\n%s", err, log3.String())
		}
		out = log3.String()
		if strings.Contains(out, "RAN-BASE-STEP") || !strings.Contains(out, "RAN-DEV-STEP") {
			t.Errorf("partial rebuild: want only the dev step to run:\n%s", out)
		}
		if got := imageFiles(t, res3.Image)["/stage"]; got != "dev-stage-2\n" {
			t.Errorf("/stage after partial rebuild = %q", got)
		}
	})

	t.Run("FailingRun", func(t *testing.T) {
		src := t.TempDir()
		writeFiles(t, src, map[string]string{"Dockerfile": "FROM " + base + "\n" +
			"RUN echo fine\n" +
			"RUN echo about-to-fail && echo on-stderr >&2 && exit 3\n" +
			"RUN echo never\n"})
		var log bytes.Buffer
		_, err := b.Build(ctx, Request{CacheNamespace: "test", ContextDir: src, OutputDir: filepath.Join(t.TempDir(), "oci"), Log: &log})
		if err == nil {
			t.Fatal("build with failing RUN succeeded")
		}
		msg, ok := usererr.Message(err)
		if !ok {
			t.Fatalf("error is not user-visible: %v", err)
		}
		t.Logf("user message:\n%s", msg)
		for _, want := range []string{
			"Dockerfile:3",
			"RUN echo about-to-fail",
			"exit code: 3",
			"about-to-fail",
			"on-stderr",
		} {
			if !strings.Contains(msg, want) {
				t.Errorf("message lacks %q:\n%s", want, msg)
			}
		}
		if strings.Contains(msg, "never") {
			t.Errorf("message mentions a later step:\n%s", msg)
		}
	})

	t.Run("SyntaxLineIgnored", func(t *testing.T) {
		// A `# syntax=` line must not make buildkitd pull a frontend image
		// (there is no registry to pull it from).
		src := t.TempDir()
		writeFiles(t, src, map[string]string{
			"Dockerfile": "# syntax=docker/dockerfile:1\nFROM scratch\nCOPY hello.txt /hello.txt\n",
			"hello.txt":  "hi\n",
		})
		res, err := b.Build(ctx, Request{CacheNamespace: "test", ContextDir: src, OutputDir: filepath.Join(t.TempDir(), "oci")})
		if err != nil {
			t.Fatalf("build: %v", err)
		}
		if got := imageFiles(t, res.Image)["/hello.txt"]; got != "hi\n" {
			t.Errorf("/hello.txt = %q", got)
		}
	})
}
