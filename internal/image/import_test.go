//go:build linux

package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// countedLayer is a layer built in memory whose content reads are counted,
// so a test can tell whether the store unpacked it.
func countedLayer(t *testing.T, opens *atomic.Int64, entries ...entry) v1.Layer {
	t.Helper()
	b := tarBytes(t, entries...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		opens.Add(1)
		return io.NopCloser(bytes.NewReader(b)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestImportUnpacksLayers(t *testing.T) {
	requireRoot(t)
	s, root := newTestStore(t)
	ctx := ctxT(t)
	cfg := v1.Config{User: "1000", Env: []string{"A=b"}, Entrypoint: []string{"/bin/sh"}, Cmd: []string{"-l"}, WorkingDir: "/home/user", Labels: map[string]string{"k": "v"}}
	img := buildImage(t, cfg, baseLayer(t), topLayer(t))
	const name = "cove-build/0123abcd:latest"

	// Concurrent imports of one build share one unpack and one result.
	var wg sync.WaitGroup
	results := make([]*Image, 4)
	errs := make([]error, 4)
	for i := range results {
		wg.Go(func() { results[i], errs[i] = s.Import(ctx, name, img) })
	}
	wg.Wait()
	for i := range results {
		if errs[i] != nil {
			t.Fatalf("import %d: %v", i, errs[i])
		}
		if results[i].Digest != results[0].Digest || strings.Join(results[i].Layers, ",") != strings.Join(results[0].Layers, ",") {
			t.Errorf("import %d = %+v, want %+v", i, results[i], results[0])
		}
	}
	got := results[0]
	want, _ := img.Digest()
	if got.Ref != name || got.Digest != want.String() || len(got.Layers) != 2 {
		t.Fatalf("image = %+v", got)
	}
	c := got.Config
	if c.User != "1000" || c.WorkingDir != "/home/user" || c.Labels["k"] != "v" ||
		strings.Join(c.Entrypoint, " ") != "/bin/sh" || strings.Join(c.Cmd, " ") != "-l" || strings.Join(c.Env, " ") != "A=b" {
		t.Errorf("config = %+v", c)
	}
	base, top := got.Layers[0], got.Layers[1]
	if !strings.HasPrefix(base, filepath.Join(root, "layers", "sha256")+"/") {
		t.Errorf("layer dir %s not in store", base)
	}
	if got := readFile(t, filepath.Join(base, "etc/hostname")); got != "base\n" {
		t.Errorf("base hostname = %q", got)
	}
	if f := lstat(t, filepath.Join(base, "home/user/file")); f.Uid != 1000 || f.Mode&0o777 != 0o600 {
		t.Errorf("home/user/file uid %d mode %o", f.Uid, f.Mode&0o777)
	}
	if wh := lstat(t, filepath.Join(top, "etc/gone")); wh.Mode&unix.S_IFMT != unix.S_IFCHR || wh.Rdev != 0 {
		t.Errorf("whiteout mode %o rdev %d, want char 0:0", wh.Mode, wh.Rdev)
	}
	buf := make([]byte, 4)
	if n, err := unix.Lgetxattr(filepath.Join(top, "opq"), opaqueXattr, buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque xattr = %q, %v", buf[:n], err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "layers", "sha256")); len(ents) != 2 {
		t.Errorf("layer store has %d entries, want 2", len(ents))
	}

	// Found by name after a restart, and only under that name.
	s2, err := NewStore(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := s2.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if g.Digest != got.Digest || strings.Join(g.Layers, ",") != strings.Join(got.Layers, ",") || g.Config.User != "1000" {
		t.Errorf("Get = %+v, want %+v", g, got)
	}
	if _, err := s2.Get(ctx, "cove-build/other:latest"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of another name: %v, want ErrNotFound", err)
	}

	// A rebuild under the same name replaces it.
	img2 := buildImage(t, v1.Config{User: "root"}, baseLayer(t), layer(t, entry{name: "v2", body: "2"}))
	if _, err := s2.Import(ctx, name, img2); err != nil {
		t.Fatal(err)
	}
	g, err = s2.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img2.Digest(); g.Digest != d.String() || g.Config.User != "root" || g.Layers[0] != base {
		t.Errorf("Get after rebuild = %+v", g)
	}
}

func TestImportReusesPulledLayer(t *testing.T) {
	requireRoot(t)
	reg := newRegistry(t)
	var baseOpens, topOpens atomic.Int64
	base := countedLayer(t, &baseOpens, entry{name: "etc/", typ: tar.TypeDir}, entry{name: "etc/os", body: "base\n"})
	ref := reg.push(t, "test/base:v1", buildImage(t, v1.Config{}, base))
	s, root := newTestStore(t)
	ctx := ctxT(t)
	pulled, err := s.Pull(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	before := lstat(t, pulled.Layers[0])

	top := countedLayer(t, &topOpens, entry{name: "app", body: "built\n"})
	built := buildImage(t, v1.Config{Cmd: []string{"app"}}, base, top)
	baseOpens.Store(0)
	topOpens.Store(0)
	img, err := s.Import(ctx, "cove-build/k1:latest", built)
	if err != nil {
		t.Fatal(err)
	}
	if img.Layers[0] != pulled.Layers[0] {
		t.Errorf("base layer dir %s, want the pulled %s", img.Layers[0], pulled.Layers[0])
	}
	if n := baseOpens.Load(); n != 0 {
		t.Errorf("shared base layer read %d times by Import, want 0 (not unpacked again)", n)
	}
	if n := topOpens.Load(); n != 1 {
		t.Errorf("new layer read %d times, want 1", n)
	}
	after := lstat(t, img.Layers[0])
	if after.Ino != before.Ino || after.Ctim != before.Ctim {
		t.Errorf("base layer dir changed: inode %d->%d ctime %v->%v", before.Ino, after.Ino, before.Ctim, after.Ctim)
	}
	if got := readFile(t, filepath.Join(img.Layers[1], "app")); got != "built\n" {
		t.Errorf("app = %q", got)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "layers", "sha256")); len(ents) != 2 {
		t.Errorf("layer store has %d entries, want 2", len(ents))
	}
	// The pulled image is untouched.
	if g, err := s.Get(ctx, ref); err != nil || g.Digest != pulled.Digest {
		t.Errorf("Get(pulled) = %+v, %v", g, err)
	}
}

func TestImportFromOCILayout(t *testing.T) {
	requireRoot(t)
	img := buildImage(t, v1.Config{Entrypoint: []string{"/entry"}, WorkingDir: "/src"}, baseLayer(t), topLayer(t))
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	limg, err := lp.Image(want)
	if err != nil {
		t.Fatal(err)
	}

	s, root := newTestStore(t)
	ctx := ctxT(t)
	got, err := s.Import(ctx, "cove-build/layout:latest", limg)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != want.String() || len(got.Layers) != 2 || strings.Join(got.Config.Entrypoint, " ") != "/entry" || got.Config.WorkingDir != "/src" {
		t.Errorf("image = %+v", got)
	}
	if got := readFile(t, filepath.Join(got.Layers[1], "opq/new")); got != "top\n" {
		t.Errorf("opq/new = %q", got)
	}
	if wh := lstat(t, filepath.Join(got.Layers[1], "etc/gone")); wh.Mode&unix.S_IFMT != unix.S_IFCHR {
		t.Errorf("whiteout mode %o", wh.Mode)
	}
	s2, err := NewStore(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g, err := s2.Get(ctx, "cove-build/layout:latest"); err != nil || g.Digest != want.String() {
		t.Errorf("Get after restart = %+v, %v", g, err)
	}
}

func TestImportRejectsBadDiffID(t *testing.T) {
	requireRoot(t)
	img := buildImage(t, v1.Config{}, layer(t, entry{name: "f", body: "x"}))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[0] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	bad, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	s, root := newTestStore(t)
	if _, err := s.Import(ctxT(t), "cove-build/bad:latest", bad); err == nil || !strings.Contains(err.Error(), "diff id") {
		t.Fatalf("import with a wrong diff id: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "layers", "sha256")); len(ents) != 0 {
		t.Errorf("layer committed: %v", ents)
	}
	if _, err := s.Get(ctxT(t), "cove-build/bad:latest"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after failed import: %v, want ErrNotFound", err)
	}
}
