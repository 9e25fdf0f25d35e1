//go:build linux

package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func requireRoot(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "lchown, mknod, trusted.* xattrs, mounts")
}

var epoch = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// entry is one tar entry of a crafted layer.
type entry struct {
	name     string
	typ      byte
	body     string
	mode     int64
	uid, gid int
	link     string
	xattrs   map[string]string
	maj, min int64
}

func tarBytes(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			Linkname: e.link, ModTime: epoch, Format: tar.FormatPAX,
			Devmajor: e.maj, Devminor: e.min,
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if len(e.xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range e.xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func layer(t *testing.T, entries ...entry) v1.Layer {
	t.Helper()
	b := tarBytes(t, entries...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func buildImage(t *testing.T, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", runtime.GOARCH, cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testRegistry is an in-process registry on 127.0.0.1 counting blob GETs.
type testRegistry struct {
	host     string
	mu       sync.Mutex
	gets     map[string]int  // blob digest -> GET count
	truncate map[string]bool // blob digests served cut in half, then aborted
	tamper   map[string]bool // blob digests served whole with their last byte changed
}

func newRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{gets: map[string]int{}, truncate: map[string]bool{}, tamper: map[string]bool{}}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			d := req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:]
			r.mu.Lock()
			r.gets[d]++
			cut, bad := r.truncate[d], r.tamper[d]
			r.mu.Unlock()
			if bad {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				b := rec.Body.Bytes()
				if len(b) > 0 {
					b[len(b)-1] ^= 0xff
				}
				w.Write(b)
				return
			}
			if cut {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				w.Write(rec.Body.Bytes()[:rec.Body.Len()/2])
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler) // the connection dies mid-blob
			}
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *testRegistry) blobGets(d v1.Hash) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gets[d.String()]
}

func (r *testRegistry) push(t *testing.T, repoTag string, img v1.Image) string {
	t.Helper()
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

func newTestStore(t *testing.T) (*Store, string) {
	t.Helper()
	root := t.TempDir()
	s, err := NewStore(root, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s.SetFetchPolicy(loopbackRegistries(t))
	return s, root
}

func ctxT(t *testing.T) context.Context {
	return testutil.Context(t)
}

func digestOf(t *testing.T, l v1.Layer) v1.Hash {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// baseLayer and topLayer exercise every entry kind and both whiteout forms.
func baseLayer(t *testing.T) v1.Layer {
	return layer(t,
		entry{name: "./", typ: tar.TypeDir},
		entry{name: "etc/", typ: tar.TypeDir},
		entry{name: "etc/hostname", body: "base\n"},
		entry{name: "etc/gone", body: "whited out above\n"},
		entry{name: "bin/", typ: tar.TypeDir},
		entry{name: "bin/su", body: "#!suid\n", mode: 0o4755},
		entry{name: "bin/sh-link", typ: tar.TypeSymlink, link: "/bin/busybox"},
		entry{name: "bin/hard", typ: tar.TypeLink, link: "bin/su"},
		entry{name: "home/", typ: tar.TypeDir},
		entry{name: "home/user/", typ: tar.TypeDir, uid: 1000, gid: 1000, mode: 0o750},
		entry{name: "home/user/file", body: "mine\n", uid: 1000, gid: 1000, mode: 0o600},
		entry{name: "opq/", typ: tar.TypeDir},
		entry{name: "opq/old", body: "hidden by opaque\n"},
		entry{name: "dev/", typ: tar.TypeDir},
		entry{name: "dev/null", typ: tar.TypeChar, mode: 0o666, maj: 1, min: 3},
		entry{name: "dev/fifo", typ: tar.TypeFifo, mode: 0o600},
		entry{name: "attr", body: "x", xattrs: map[string]string{"user.cove": "yes"}},
	)
}

func topLayer(t *testing.T) v1.Layer {
	return layer(t,
		entry{name: "etc/.wh.gone", body: ""},
		entry{name: "opq/", typ: tar.TypeDir},
		entry{name: "opq/.wh..wh..opq", body: ""},
		entry{name: "opq/new", body: "top\n"},
		entry{name: "etc/hostname", body: "top\n"},
	)
}

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx, cancel
}

func fmtSscanf(s string, major, minor *int) (int, error) {
	return fmt.Sscanf(s, "%d.%d", major, minor)
}
