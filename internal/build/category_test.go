package build

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	gatewaypb "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/util/grpcerrors"
	"google.golang.org/grpc/codes"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/testutil"
	"github.com/covedev/cove/internal/testutil/testimage"
	"github.com/covedev/cove/internal/usererr"
)

// BuildKit's own words decide; a failed RUN is decided by its exit, never by
// its command line or output, which are the Dockerfile's.
func TestSolveCategory(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want errdefs.Category
	}{
		{"run exits non-zero", &gatewaypb.ExitError{ExitCode: 3, Err: errors.New(`process "/bin/sh -c echo connection refused; exit 3" did not complete successfully: exit code: 3`)}, errdefs.CategoryInvalidArgument},
		{"run output claims a network failure", fmt.Errorf("solve: %w", &gatewaypb.ExitError{ExitCode: 1, Err: errors.New("failed to do request: connection refused")}), errdefs.CategoryInvalidArgument},
		{"dockerfile parse error", errors.New("failed to solve: dockerfile parse error on line 2: unknown instruction: NOTANINSTRUCTION"), errdefs.CategoryInvalidArgument},
		{"buildkitd gone", grpcerrors.WrapCode(errors.New("error reading from server: EOF"), codes.Unavailable), errdefs.CategoryUnavailable},
		{"buildkitd out of resources", grpcerrors.WrapCode(errors.New("too many"), codes.ResourceExhausted), errdefs.CategoryResourceExhausted},
		{"disk full", errors.New("failed to copy files: write /var/lib/x: no space left on device"), errdefs.CategoryResourceExhausted},
		{"base unreachable", errors.New(`failed to solve: 127.0.0.1:1/x:latest: failed to resolve source metadata for 127.0.0.1:1/x:latest: failed to do request: Head "https://127.0.0.1:1/v2/x/manifests/latest": dial tcp 127.0.0.1:1: connect: connection refused`), errdefs.CategoryUnavailable},
		{"base dns", errors.New(`failed to resolve source metadata for r.example/x:1: failed to do request: Head "https://r.example/v2/x/manifests/1": dial tcp: lookup r.example: no such host`), errdefs.CategoryUnavailable},
		{"base rate limited", errors.New(`failed to resolve source metadata for docker.io/library/x:1: unexpected status from HEAD request to https://registry-1.docker.io/v2/library/x/manifests/1: 429 Too Many Requests`), errdefs.CategoryUnavailable},
		{"base 503", errors.New(`failed to resolve source metadata for r.example/x:1: unexpected status from HEAD request to https://r.example/v2/x/manifests/1: 503 Service Unavailable`), errdefs.CategoryUnavailable},
		{"base unauthorized", errors.New(`failed to resolve source metadata for r.example/x:1: unexpected status from HEAD request to https://r.example/v2/x/manifests/1: 401 Unauthorized`), errdefs.CategoryPermissionDenied},
		{"base not found", errors.New(`failed to resolve source metadata for r.example/x:1: r.example/x:1: not found`), errdefs.CategoryNotFound},
	} {
		if got := solveCategory(tc.err); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// What a retry loop decides by, performed for real with buildkitd on
// loopback: a Dockerfile that does not parse, a failing step (even one
// whose command line reads like a network failure) and a base image that
// does not exist stop; a registry that does not answer is retried.
func TestBuildFailureCategories(t *testing.T) {
	bb, err := testimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	registry := testimage.Serve(t, map[string]v1.Image{"test/busybox:latest": bb})
	base := registry + "/test/busybox:latest"
	b := startBuilder(t, registry)
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	for _, tc := range []struct {
		name, dockerfile string
		want             errdefs.Category
	}{
		{"syntax error", "FROM " + base + "\nNOTANINSTRUCTION x\n", errdefs.CategoryInvalidArgument},
		{"copy of a missing file", "FROM " + base + "\nCOPY missing.txt /\n", errdefs.CategoryInvalidArgument},
		{"failing run", "FROM " + base + "\nRUN exit 3\n", errdefs.CategoryInvalidArgument},
		// The step's command line is in BuildKit's error: it must not make
		// a failing step look like a network failure.
		{"run claiming a network failure", "FROM " + base + "\nRUN echo 'failed to do request: connection refused' && exit 3\n", errdefs.CategoryInvalidArgument},
		{"base image not found", "FROM " + registry + "/test/missing:latest\n", errdefs.CategoryNotFound},
		{"registry unreachable", "FROM " + closed + "/test/busybox:latest\n", errdefs.CategoryUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := t.TempDir()
			writeFiles(t, src, map[string]string{"Dockerfile": tc.dockerfile})
			_, err := b.Build(ctx, Request{CacheNamespace: "test", ContextDir: src, OutputDir: filepath.Join(t.TempDir(), "oci")})
			msg, ok := usererr.Message(err)
			if !ok {
				t.Fatalf("not a user error: %v", err)
			}
			if c := errdefs.CategoryOf(err); c != tc.want {
				t.Errorf("category %s, want %s; message:\n%s", c, tc.want, msg)
			}
		})
	}
}

// A stopped builder is not the Dockerfile's fault: the build may be tried
// again when the runner is back.
func TestStoppedBuilderIsUnavailable(t *testing.T) {
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
	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = b.Build(context.Background(), Request{CacheNamespace: "test", ContextDir: t.TempDir(), OutputDir: t.TempDir()})
	if c := errdefs.CategoryOf(err); err == nil || c != errdefs.CategoryUnavailable || !errdefs.Retryable(err) {
		t.Fatalf("Build on a stopped builder: %v (%s), want unavailable", err, c)
	}
	if b.cmd != nil {
		t.Error("buildkitd was started by a stopped builder")
	}
}
