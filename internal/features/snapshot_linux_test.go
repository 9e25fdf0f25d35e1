package features

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/covedev/cove/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestSnapshotLayer(t *testing.T) {
	testutil.RequireRoot(t, "chown, mknod, trusted xattrs")
	const shift = 200000
	upper := t.TempDir()
	mk := func(rel string, mode os.FileMode, uid, gid int) string {
		p := filepath.Join(upper, rel)
		if mode.IsDir() {
			if err := os.MkdirAll(p, mode.Perm()); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(p, []byte("data:"+rel), mode.Perm()); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mk("usr", os.ModeDir|0o755, shift, shift)
	mk("usr/local", os.ModeDir|0o755, shift, shift)
	tool := mk("usr/local/tool", 0o4755, shift, shift+50)
	if err := os.Chmod(tool, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(tool, filepath.Join(upper, "usr/local/tool-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("tool", filepath.Join(upper, "usr/local/tool-sym")); err != nil {
		t.Fatal(err)
	}
	os.Lchown(filepath.Join(upper, "usr/local/tool-sym"), shift, shift)
	mk("home", os.ModeDir|0o755, shift, shift)
	mk("home/vscode", os.ModeDir|0o700, shift+1000, shift+1000)
	mk("home/vscode/.bashrc", 0o644, shift+1000, shift+1000)
	opaque := mk("opt", os.ModeDir|0o755, shift, shift)
	if err := unix.Setxattr(opaque, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Skipf("trusted xattrs unsupported here: %v", err)
	}
	if err := unix.Setxattr(opaque, "trusted.overlay.origin", []byte{0, 1}, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(tool, "user.note", []byte("kept"), 0); err != nil {
		t.Fatal(err)
	}
	mk("etc", os.ModeDir|0o755, shift, shift)
	if err := unix.Mknod(filepath.Join(upper, "etc/removed"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	os.Lchown(filepath.Join(upper, "etc/removed"), shift, shift)
	mk("etc/hosts", 0o644, shift, shift)
	mk("tmp", os.ModeDir|0o1777, shift, shift)
	mk("tmp/junk", 0o644, shift, shift)
	mk("workspaces", os.ModeDir|0o755, shift+1000, shift+1000)
	mk("stray", 0o644, 0, 0) // a host-owned file: not in the range

	layer := filepath.Join(t.TempDir(), "layer")
	exclude := []string{"/tmp", "/etc/hosts", "/workspaces", "/.cove"}
	if err := SnapshotLayer(upper, layer, shift, exclude); err != nil {
		t.Fatal(err)
	}

	stat := func(rel string) unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(layer, rel), &st); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		return st
	}
	for rel, want := range map[string][2]uint32{
		"usr/local/tool":      {0, 50},
		"home/vscode":         {1000, 1000},
		"home/vscode/.bashrc": {1000, 1000},
		"usr/local/tool-sym":  {0, 0},
		"etc/removed":         {0, 0},
		"stray":               {overflowID, overflowID},
	} {
		if st := stat(rel); st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("%s owned by %d:%d, want %d:%d", rel, st.Uid, st.Gid, want[0], want[1])
		}
	}
	if st := stat("usr/local/tool"); st.Mode&0o7777 != 0o4755 {
		t.Errorf("tool mode %o, want 4755", st.Mode&0o7777)
	}
	if st := stat("home/vscode"); st.Mode&0o7777 != 0o700 {
		t.Errorf("home mode %o", st.Mode&0o7777)
	}
	if a, b := stat("usr/local/tool"), stat("usr/local/tool-link"); a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link lost: inodes %d %d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	if tgt, err := os.Readlink(filepath.Join(layer, "usr/local/tool-sym")); err != nil || tgt != "tool" {
		t.Errorf("symlink = %q, %v", tgt, err)
	}
	if st := stat("etc/removed"); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout not kept: mode %o rdev %d", st.Mode, st.Rdev)
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(layer, "opt"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque xattr: %q, %v", buf[:n], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(layer, "opt"), "trusted.overlay.origin", buf); err == nil {
		t.Error("overlay origin xattr copied")
	}
	if n, err := unix.Lgetxattr(filepath.Join(layer, "usr/local/tool"), "user.note", buf); err != nil || string(buf[:n]) != "kept" {
		t.Errorf("user xattr: %q, %v", buf[:n], err)
	}
	for _, rel := range []string{"tmp", "etc/hosts", "workspaces"} {
		if _, err := os.Lstat(filepath.Join(layer, rel)); err == nil {
			t.Errorf("excluded %s copied", rel)
		}
	}
	if b, err := os.ReadFile(filepath.Join(layer, "home/vscode/.bashrc")); err != nil || string(b) != "data:home/vscode/.bashrc" {
		t.Errorf("content = %q, %v", b, err)
	}

	// An existing layer is complete: left alone.
	if err := os.WriteFile(filepath.Join(upper, "new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := SnapshotLayer(upper, layer, shift, exclude); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(layer, "new")); err == nil {
		t.Error("existing layer rewritten")
	}

	// A failed snapshot leaves neither the layer nor debris.
	if err := unix.Setxattr(tool, "trusted.overlay.metacopy", nil, 0); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	if err := SnapshotLayer(upper, bad, shift, exclude); err == nil {
		t.Fatal("metacopy upper accepted")
	}
	if ents, _ := os.ReadDir(filepath.Dir(bad)); len(ents) != 0 {
		t.Errorf("failed snapshot left %v", ents)
	}
}
