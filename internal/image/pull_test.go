//go:build linux

package image

import (
	"archive/tar"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/usererr"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"
)

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPullUnpacksLayers(t *testing.T) {
	requireRoot(t)
	reg := newRegistry(t)
	cfg := v1.Config{User: "1000", Env: []string{"A=b"}, Entrypoint: []string{"/bin/sh"}, Cmd: []string{"-l"}, WorkingDir: "/home/user", Labels: map[string]string{"k": "v"}}
	ref := reg.push(t, "test/unpack:v1", buildImage(t, cfg, baseLayer(t), topLayer(t)))
	s, root := newTestStore(t)
	ctx := ctxT(t)

	img, err := s.Pull(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.Ref != ref || !strings.HasPrefix(img.Digest, "sha256:") || len(img.Layers) != 2 {
		t.Fatalf("image = %+v", img)
	}
	if img.Config.User != "1000" || img.Config.WorkingDir != "/home/user" || img.Config.Labels["k"] != "v" ||
		img.Config.Entrypoint[0] != "/bin/sh" || img.Config.Cmd[0] != "-l" || img.Config.Env[0] != "A=b" {
		t.Errorf("config = %+v", img.Config)
	}
	base, top := img.Layers[0], img.Layers[1]
	if !strings.HasPrefix(base, filepath.Join(root, "layers", "sha256")+"/") {
		t.Errorf("layer dir %s not in store", base)
	}

	if got := readFile(t, filepath.Join(base, "etc/hostname")); got != "base\n" {
		t.Errorf("base hostname = %q", got)
	}
	su := lstat(t, filepath.Join(base, "bin/su"))
	if su.Mode&0o7777 != 0o4755 || su.Uid != 0 {
		t.Errorf("bin/su mode %o uid %d, want 4755 uid 0", su.Mode&0o7777, su.Uid)
	}
	if hard := lstat(t, filepath.Join(base, "bin/hard")); hard.Ino != su.Ino {
		t.Errorf("hardlink has inode %d, want %d", hard.Ino, su.Ino)
	}
	if target, err := os.Readlink(filepath.Join(base, "bin/sh-link")); err != nil || target != "/bin/busybox" {
		t.Errorf("symlink = %q, %v", target, err)
	}
	f := lstat(t, filepath.Join(base, "home/user/file"))
	if f.Uid != 1000 || f.Gid != 1000 || f.Mode&0o777 != 0o600 {
		t.Errorf("home/user/file uid %d gid %d mode %o", f.Uid, f.Gid, f.Mode&0o777)
	}
	if d := lstat(t, filepath.Join(base, "home/user")); d.Uid != 1000 || d.Mode&0o777 != 0o750 {
		t.Errorf("home/user uid %d mode %o", d.Uid, d.Mode&0o777)
	}
	if f.Mtim.Sec != epoch.Unix() {
		t.Errorf("mtime %d, want %d", f.Mtim.Sec, epoch.Unix())
	}
	if d := lstat(t, filepath.Join(base, "home")); d.Mtim.Sec != epoch.Unix() {
		t.Errorf("dir mtime %d, want %d", d.Mtim.Sec, epoch.Unix())
	}
	if n := lstat(t, filepath.Join(base, "dev/null")); n.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(n.Rdev) != 1 || unix.Minor(n.Rdev) != 3 {
		t.Errorf("dev/null mode %o rdev %d", n.Mode, n.Rdev)
	}
	if n := lstat(t, filepath.Join(base, "dev/fifo")); n.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("dev/fifo mode %o", n.Mode)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(base, "attr"), "user.cove", buf); err != nil || string(buf[:n]) != "yes" {
		t.Errorf("xattr user.cove = %q, %v", buf[:n], err)
	}

	// Whiteouts in the top layer, the overlayfs way.
	wh := lstat(t, filepath.Join(top, "etc/gone"))
	if wh.Mode&unix.S_IFMT != unix.S_IFCHR || wh.Rdev != 0 {
		t.Errorf("whiteout mode %o rdev %d, want char 0:0", wh.Mode, wh.Rdev)
	}
	if _, err := os.Lstat(filepath.Join(top, "etc/.wh.gone")); !os.IsNotExist(err) {
		t.Errorf(".wh. file kept: %v", err)
	}
	if n, err := unix.Lgetxattr(filepath.Join(top, "opq"), opaqueXattr, buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque xattr = %q, %v", buf[:n], err)
	}
	if got := readFile(t, filepath.Join(top, "opq/new")); got != "top\n" {
		t.Errorf("opq/new = %q", got)
	}

	// Get works offline, also after a restart.
	s2, err := NewStore(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != img.Digest || strings.Join(got.Layers, ",") != strings.Join(img.Layers, ",") || got.Config.User != "1000" {
		t.Errorf("Get = %+v, want %+v", got, img)
	}
	if _, err := s2.Get(ctx, reg.host+"/test/unpack:other"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of unpulled tag: %v, want ErrNotFound", err)
	}
	// A lost layer makes the image incomplete, not half-usable.
	if err := os.RemoveAll(top); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Get(ctx, ref); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get with a missing layer: %v, want ErrNotFound", err)
	}
}

func TestPullIndexPicksPlatform(t *testing.T) {
	requireRoot(t)
	reg := newRegistry(t)
	mine := buildImage(t, v1.Config{}, layer(t, entry{name: "arch", body: runtime.GOARCH}))
	other := buildImage(t, v1.Config{}, layer(t, entry{name: "arch", body: "other"}))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}}},
		mutate.IndexAddendum{Add: mine, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	ref := reg.host + "/test/multi:latest"
	nr, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(nr, idx); err != nil {
		t.Fatal(err)
	}
	s, _ := newTestStore(t)
	img, err := s.Pull(ctxT(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := mine.Digest()
	if img.Digest != want.String() {
		t.Errorf("digest %s, want the linux/%s manifest %s", img.Digest, runtime.GOARCH, want)
	}
	if got := readFile(t, filepath.Join(img.Layers[0], "arch")); got != runtime.GOARCH {
		t.Errorf("arch file = %q", got)
	}
}

func TestConcurrentPullsDownloadOnce(t *testing.T) {
	requireRoot(t)
	reg := newRegistry(t)
	base, top := baseLayer(t), topLayer(t)
	img := buildImage(t, v1.Config{}, base, top)
	ref := reg.push(t, "test/conc:v1", img)
	s, root := newTestStore(t)
	ctx := ctxT(t)

	var wg sync.WaitGroup
	results := make([]*Image, 8)
	errs := make([]error, 8)
	for i := range results {
		wg.Go(func() { results[i], errs[i] = s.Pull(ctx, ref) })
	}
	wg.Wait()
	for i := range results {
		if errs[i] != nil {
			t.Fatalf("pull %d: %v", i, errs[i])
		}
		if results[i].Digest != results[0].Digest || results[i].Layers[1] != results[0].Layers[1] {
			t.Errorf("pull %d = %+v, want %+v", i, results[i], results[0])
		}
	}
	cfgDigest, _ := img.ConfigName()
	for _, d := range []v1.Hash{digestOf(t, base), digestOf(t, top), cfgDigest} {
		if n := reg.blobGets(d); n != 1 {
			t.Errorf("blob %s fetched %d times, want 1", d, n)
		}
	}
	// A later pull of the same tag re-resolves the tag but fetches no blob.
	if _, err := s.Pull(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if n := reg.blobGets(digestOf(t, base)); n != 1 {
		t.Errorf("base blob fetched %d times after re-pull, want 1", n)
	}
	ents, err := os.ReadDir(filepath.Join(root, "layers", "sha256"))
	if err != nil || len(ents) != 2 {
		t.Errorf("layer store has %d entries (%v), want 2", len(ents), err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "tmp")); len(ents) != 0 {
		t.Errorf("tmp not empty: %v", ents)
	}
}

func TestImagesShareBaseLayer(t *testing.T) {
	requireRoot(t)
	reg := newRegistry(t)
	base := baseLayer(t)
	a := reg.push(t, "test/a:v1", buildImage(t, v1.Config{}, base, layer(t, entry{name: "a", body: "a"})))
	b := reg.push(t, "other/b:v2", buildImage(t, v1.Config{}, base, layer(t, entry{name: "b", body: "b"})))
	s, _ := newTestStore(t)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	var ia, ib *Image
	var ea, eb error
	wg.Go(func() { ia, ea = s.Pull(ctx, a) })
	wg.Go(func() { ib, eb = s.Pull(ctx, b) })
	wg.Wait()
	if ea != nil || eb != nil {
		t.Fatal(ea, eb)
	}
	if ia.Layers[0] != ib.Layers[0] {
		t.Errorf("base layers differ: %s vs %s", ia.Layers[0], ib.Layers[0])
	}
	if ia.Layers[1] == ib.Layers[1] {
		t.Errorf("top layers are the same dir")
	}
	// Each repository serves the blob, but it is unpacked (so fetched) once.
	if n := reg.blobGets(digestOf(t, base)); n != 1 {
		t.Errorf("shared base blob fetched %d times, want 1", n)
	}
}

func TestPathEscapeRefused(t *testing.T) {
	requireRoot(t)
	reg := newRegistry(t)
	outside := t.TempDir()
	cases := map[string][]entry{
		"dotdot":   {{name: "../../../../../../" + outside + "/evil", body: "x"}},
		"absolute": {{name: outside + "/evil", body: "x"}},
		"symlink": {
			{name: "link", typ: tar.TypeSymlink, link: outside},
			{name: "link/evil", body: "x"},
		},
		"hardlink": {{name: "hl", typ: tar.TypeLink, link: "../../../../../../etc/passwd"}},
	}
	s, root := newTestStore(t)
	for n, entries := range cases {
		t.Run(n, func(t *testing.T) {
			ref := reg.push(t, "test/escape:"+n, buildImage(t, v1.Config{}, layer(t, entries...)))
			_, err := s.Pull(ctxT(t), ref)
			if !errors.Is(err, errEscape) {
				t.Fatalf("pull: %v, want a path escape error", err)
			}
			if _, ok := usererr.Message(err); !ok {
				t.Errorf("escape error is not user-visible: %v", err)
			}
			if _, err := os.Lstat(filepath.Join(outside, "evil")); !os.IsNotExist(err) {
				t.Errorf("file written outside the layer: %v", err)
			}
		})
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "layers", "sha256")); len(ents) != 0 {
		t.Errorf("refused layers committed: %v", ents)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "tmp")); len(ents) != 0 {
		t.Errorf("tmp not cleaned: %v", ents)
	}
}

func TestPullUserErrors(t *testing.T) {
	requireRoot(t)
	reg := newRegistry(t)
	reg.push(t, "test/exists:v1", buildImage(t, v1.Config{}, layer(t, entry{name: "f", body: "x"})))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	s, _ := newTestStore(t)
	cases := []struct {
		ref, want string
		cat       errdefs.Category // what a retry loop decides by
	}{
		{reg.host + "/test/exists:nope", `image "` + reg.host + `/test/exists:nope" not found`, errdefs.CategoryNotFound},
		{reg.host + "/test/missing:v1", `image "` + reg.host + `/test/missing:v1" not found`, errdefs.CategoryNotFound},
		{closed + "/test/x:v1", "registry " + closed + " unreachable: ", errdefs.CategoryUnavailable},
		{"Bad//Ref::", `invalid image reference "Bad//Ref::"`, errdefs.CategoryInvalidArgument},
	}
	for _, c := range cases {
		_, err := s.Pull(ctxT(t), c.ref)
		msg, ok := usererr.Message(err)
		t.Logf("%s: %s", c.ref, msg)
		if !ok || !strings.HasPrefix(msg, c.want) {
			t.Errorf("Pull(%q) = %v (user message %q), want %q", c.ref, err, msg, c.want)
		}
		if got := errdefs.CategoryOf(err); got != c.cat {
			t.Errorf("Pull(%q): category %s, want %s", c.ref, got, c.cat)
		}
	}
}

func TestInterruptedUnpackIsRedone(t *testing.T) {
	requireRoot(t)
	reg := newRegistry(t)
	big := make([]byte, 4<<20)
	rand.NewChaCha8([32]byte{1}).Read(big)
	l := layer(t, entry{name: "small", body: "x"}, entry{name: "big", body: string(big)}, entry{name: "after", body: "y"})
	ref := reg.push(t, "test/retry:v1", buildImage(t, v1.Config{}, l))
	root := t.TempDir()
	// Debris of a runner killed mid-unpack.
	debris := filepath.Join(root, "tmp", "layer-0123456789abcdef")
	if err := os.MkdirAll(filepath.Join(debris, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetFetchPolicy(loopbackRegistries(t))
	if _, err := os.Stat(debris); !os.IsNotExist(err) {
		t.Errorf("debris kept: %v", err)
	}

	// The connection dies mid-layer: nothing is committed, nothing left.
	reg.mu.Lock()
	reg.truncate[digestOf(t, l).String()] = true
	reg.mu.Unlock()
	_, err = s.Pull(ctxT(t), ref)
	if msg, _ := usererr.Message(err); !strings.Contains(msg, "interrupted") {
		t.Fatalf("pull of a truncated layer: %v (user message %q)", err, msg)
	}
	if !errdefs.Retryable(err) {
		t.Errorf("an interrupted download is not retryable: %v (%s)", err, errdefs.CategoryOf(err))
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "layers", "sha256")); len(ents) != 0 {
		t.Errorf("partial layer committed: %v", ents)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "tmp")); len(ents) != 0 {
		t.Errorf("tmp not cleaned: %v", ents)
	}
	if _, err := s.Get(ctxT(t), ref); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after failed pull: %v, want ErrNotFound", err)
	}

	reg.mu.Lock()
	reg.truncate = map[string]bool{}
	reg.mu.Unlock()
	img, err := s.Pull(ctxT(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(img.Layers[0], "after")); got != "y" {
		t.Errorf("after = %q", got)
	}
	if got := readFile(t, filepath.Join(img.Layers[0], "big")); got != string(big) {
		t.Errorf("big file differs")
	}
}
