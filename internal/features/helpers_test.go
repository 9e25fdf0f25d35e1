package features

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/covedev/cove/internal/testutil/testimage"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// writeFeature makes a feature directory dir with metadata meta (marshalled
// to devcontainer-feature.json) and install.sh.
func writeFeature(t *testing.T, dir string, meta map[string]any, install string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "devcontainer-feature.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "install.sh"), []byte("#!/bin/sh\nset -e\n"+install), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tarDir returns a tar of dir's files (paths relative to dir), gzipped if gz.
func tarDir(t *testing.T, dir string, gz bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	if err := testimage.TarDir(w, dir); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// testRegistry is an in-process OCI registry on 127.0.0.1 counting blob GETs.
type testRegistry struct {
	host  string
	mu    sync.Mutex
	blobs int
}

func newRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			r.mu.Lock()
			r.blobs++
			r.mu.Unlock()
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *testRegistry) blobGets() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobs
}

// publish pushes the feature directory dir as a feature artifact at
// host/repoTag and returns the full reference.
func (r *testRegistry) publish(t *testing.T, repoTag, dir string) string {
	t.Helper()
	layer := static.NewLayer(tarDir(t, dir, false), types.MediaType(LayerMediaType))
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, "application/vnd.devcontainers")
	ref := r.host + "/" + repoTag
	nr, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(nr, img); err != nil {
		t.Fatal(err)
	}
	return ref
}

func newResolver(t *testing.T) *Resolver {
	return &Resolver{CacheDir: t.TempDir(), Fetch: loopbackRegistries(t)}
}

func ids(fs []Feature) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Meta.ID
	}
	return out
}
