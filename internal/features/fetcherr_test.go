package features

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/usererr"
)

// Each way a feature fetch fails, performed for real on loopback, gets the
// category a retry loop decides by and a message naming the root cause
// without the server's words. Before the images' and features' registry
// helpers were one, the features copy said "network error" for what it
// could not name and missed unreachable networks.
func TestFeatureFetchFailureCategories(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	reg := newRegistry(t)
	reg.publish(t, "features/go:1", writeFeature(t, filepath.Join(t.TempDir(), "go"), optsMeta("go", nil), "echo go\n"))
	status := func(code int) string {
		s := newCountingServer(t, false, func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(code)
			io.WriteString(w, secretBody)
		})
		return "http://" + s.hostPort() + "/f.tgz"
	}
	notFeature := newCountingServer(t, false, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "not a tarball") })

	r := &Resolver{CacheDir: t.TempDir(), Fetch: policy(t, nil, []string{"127.0.0.1"})}
	for _, tc := range []struct {
		name, id, msg string
		want          errdefs.Category
	}{
		{"registry refuses connections", closed + "/features/go:1", `fetch feature "` + closed + `/features/go:1": registry ` + closed + " unreachable: dial tcp " + closed + ": connect: connection refused", errdefs.CategoryUnavailable},
		{"tarball server refuses connections", "http://" + closed + "/f.tgz", "unreachable: dial tcp " + closed + ": connect: connection refused", errdefs.CategoryUnavailable},
		{"feature not in the registry", reg.host + "/features/missing:1", `feature "` + reg.host + `/features/missing:1" not found`, errdefs.CategoryNotFound},
		{"tarball 503", status(503), "failed: HTTP 503 Service Unavailable", errdefs.CategoryUnavailable},
		{"tarball 404", status(404), "failed: HTTP 404 Not Found", errdefs.CategoryNotFound},
		{"tarball 403", status(403), "failed: HTTP 403 Forbidden", errdefs.CategoryPermissionDenied},
		{"not a tarball", "http://" + notFeature.hostPort() + "/f.tgz", "is not a valid feature tarball", errdefs.CategoryInvalidArgument},
		{"malformed reference", "ghcr.io/x/Bad Name:1", "invalid feature reference", errdefs.CategoryInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Resolve(context.Background(), []Ref{{ID: tc.id}}, t.TempDir(), nil)
			msg, ok := usererr.Message(err)
			if !ok {
				t.Fatalf("not a user error: %v", err)
			}
			if strings.Contains(msg, "hunter2") {
				t.Fatalf("the server's body reached the message: %q", msg)
			}
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q, want it to contain %q", msg, tc.msg)
			}
			if c := errdefs.CategoryOf(err); c != tc.want {
				t.Errorf("%q: category %s, want %s", msg, c, tc.want)
			}
		})
	}
}

// The fetch policy's refusal is PermissionDenied: retrying cannot help
// until the operator allows the destination.
func TestFeaturePolicyRefusalIsTerminal(t *testing.T) {
	srv := newCountingServer(t, false, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, secretBody) })
	r := &Resolver{CacheDir: t.TempDir(), Fetch: policy(t, nil, nil)}
	for _, id := range []string{srv.hostPort() + "/features/go:1", "http://" + srv.hostPort() + "/f.tgz"} {
		_, err := r.Resolve(context.Background(), []Ref{{ID: id}}, t.TempDir(), nil)
		if c := errdefs.CategoryOf(err); c != errdefs.CategoryPermissionDenied || errdefs.Retryable(err) {
			t.Errorf("%s: %v is %s, want permission denied", id, err, c)
		}
	}
	if n := srv.conns.Load(); n != 0 {
		t.Fatalf("the refused server saw %d connections", n)
	}
}
