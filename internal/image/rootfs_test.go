//go:build linux

package image

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/mountinfo"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if p := mountinfo.Unescape(fs[4]); p == dir || strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func testRootfs(t *testing.T, noIDMap bool) {
	requireRoot(t)
	reg := newRegistry(t)
	// The empty layer twice, as WORKDIR steps make it.
	emptyLayer := layer(t)
	ref := reg.push(t, "test/rootfs:v1", buildImage(t, v1.Config{}, baseLayer(t), emptyLayer, topLayer(t), emptyLayer))
	s, root := newTestStore(t)
	ctx := ctxT(t)
	img, err := s.Pull(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if !noIDMap && !IDMappedMountsSupported(img.Layers[0]) {
		t.Skip("idmapped mounts not supported on this kernel/file system")
	}

	env := t.TempDir()
	cfg := RootfsConfig{
		Layers:   img.Layers,
		UpperDir: filepath.Join(env, "upper"),
		WorkDir:  filepath.Join(env, "work"),
		LowerDir: filepath.Join(env, "l"),
		Target:   filepath.Join(env, "rootfs"),
		IDMap:    idmap.Range{HostID: 200000, Size: 65536},
		noIDMap:  noIDMap,
	}
	t.Cleanup(func() {
		if err := UnmountRootfs(context.Background(), cfg); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, m := range mountsUnder(t, env) { // whatever a failure left
			_ = unix.Unmount(m, unix.MNT_DETACH)
		}
	})
	if err := MountRootfs(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// The host's view of the overlay never makes an image's device nodes
	// usable (S9 of the 2026-12 review).
	var sfs unix.Statfs_t
	if err := unix.Statfs(cfg.Target, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Flags&unix.ST_NODEV == 0 {
		t.Errorf("overlay mounted without nodev (flags %#x)", sfs.Flags)
	}

	// Ids are shifted in the view, not on disk.
	if st := lstat(t, filepath.Join(cfg.Target, "home/user/file")); st.Uid != 201000 || st.Gid != 201000 {
		t.Errorf("rootfs home/user/file owned by %d:%d, want 201000:201000", st.Uid, st.Gid)
	}
	if st := lstat(t, filepath.Join(img.Layers[0], "home/user/file")); st.Uid != 1000 {
		t.Errorf("layer file on disk owned by %d, want 1000", st.Uid)
	}
	if st := lstat(t, filepath.Join(cfg.Target, "bin/su")); st.Uid != 200000 || st.Mode&0o7777 != 0o4755 {
		t.Errorf("rootfs bin/su uid %d mode %o, want 200000 4755", st.Uid, st.Mode&0o7777)
	}
	if got := readFile(t, filepath.Join(cfg.Target, "etc/hostname")); got != "top\n" {
		t.Errorf("etc/hostname = %q, want the top layer's", got)
	}
	if _, err := os.Lstat(filepath.Join(cfg.Target, "etc/gone")); !os.IsNotExist(err) {
		t.Errorf("whited-out etc/gone visible: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(cfg.Target, "opq/old")); !os.IsNotExist(err) {
		t.Errorf("opaque dir shows lower opq/old: %v", err)
	}
	if got := readFile(t, filepath.Join(cfg.Target, "opq/new")); got != "top\n" {
		t.Errorf("opq/new = %q", got)
	}
	for _, d := range []string{cfg.UpperDir, cfg.WorkDir} {
		if st := lstat(t, d); st.Uid != 200000 || st.Gid != 200000 || st.Mode&0o777 != 0o755 {
			t.Errorf("%s owned by %d:%d mode %o", d, st.Uid, st.Gid, st.Mode&0o777)
		}
	}
	if noIDMap {
		shifted := filepath.Join(root, "shifted", "200000-65536", filepath.Base(img.Layers[0]), "home/user/file")
		if st := lstat(t, shifted); st.Uid != 201000 {
			t.Errorf("shifted copy owned by %d, want 201000", st.Uid)
		}
		sdir := filepath.Join(root, "shifted", "200000-65536", filepath.Base(img.Layers[0]))
		if su, hard := lstat(t, filepath.Join(sdir, "bin/su")), lstat(t, filepath.Join(sdir, "bin/hard")); su.Ino != hard.Ino || su.Mode&0o7777 != 0o4755 {
			t.Errorf("shifted copy: hard link or setuid lost (ino %d/%d, mode %o)", su.Ino, hard.Ino, su.Mode&0o7777)
		}
		if wh := lstat(t, filepath.Join(root, "shifted", "200000-65536", filepath.Base(img.Layers[2]), "etc/gone")); wh.Mode&unix.S_IFMT != unix.S_IFCHR || wh.Rdev != 0 {
			t.Errorf("shifted copy: whiteout lost")
		}
	} else {
		for _, i := range []string{"0", "1", "2"} {
			if ok, _ := Mounted(filepath.Join(cfg.LowerDir, i)); !ok {
				t.Errorf("lower %s is not an idmapped mount", i)
			}
		}
	}

	// Writes land in the upper dir.
	if err := os.WriteFile(filepath.Join(cfg.Target, "etc/new"), []byte("written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(cfg.UpperDir, "etc/new")); got != "written\n" {
		t.Errorf("upper etc/new = %q", got)
	}
	if err := os.Remove(filepath.Join(cfg.Target, "etc/hostname")); err != nil {
		t.Fatal(err)
	}

	// Idempotent mount: no second overlay.
	before := len(mountsUnder(t, env))
	if err := MountRootfs(ctx, cfg); err != nil {
		t.Fatalf("second mount: %v", err)
	}
	if after := len(mountsUnder(t, env)); after != before {
		t.Errorf("second MountRootfs changed mounts: %d -> %d", before, after)
	}

	if err := UnmountRootfs(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if m := mountsUnder(t, env); len(m) != 0 {
		t.Errorf("mounts left after unmount: %v", m)
	}
	if err := UnmountRootfs(ctx, cfg); err != nil {
		t.Errorf("second unmount: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.UpperDir, "etc/new")); err != nil {
		t.Errorf("upper content lost on unmount: %v", err)
	}

	// Mount again: the upper dir's content is back, deletions included.
	if err := MountRootfs(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(cfg.Target, "etc/new")); got != "written\n" {
		t.Errorf("after remount etc/new = %q", got)
	}
	if _, err := os.Lstat(filepath.Join(cfg.Target, "etc/hostname")); !os.IsNotExist(err) {
		t.Errorf("deleted etc/hostname is back: %v", err)
	}
}

func TestMountRootfsIDMapped(t *testing.T) { testRootfs(t, false) }

func TestMountRootfsShiftedCopy(t *testing.T) { testRootfs(t, true) }

func TestIDMappedMountsSupported(t *testing.T) {
	requireRoot(t)
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	if _, err := fmtSscanf(unix.ByteSliceToString(uts.Release[:]), &major, &minor); err != nil || major < 6 {
		t.Skipf("kernel %s: support not asserted", unix.ByteSliceToString(uts.Release[:]))
	}
	if !IDMappedMountsSupported(t.TempDir()) {
		t.Errorf("idmapped mounts reported unsupported on kernel %d.%d", major, minor)
	}
}

func TestUniqueLayers(t *testing.T) {
	got := strings.Join(uniqueLayers([]string{"a", "e", "b", "e", "c", "a"}), ",")
	if got != "b,e,c,a" {
		t.Errorf("uniqueLayers = %s, want b,e,c,a", got)
	}
}
