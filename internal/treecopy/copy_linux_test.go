package treecopy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func lstat(t *testing.T, p string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func TestCopy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown, mknod, set-id bits)")
	}
	src := t.TempDir()
	w := func(rel string, mode os.FileMode, uid int) string {
		p := filepath.Join(src, rel)
		if err := os.WriteFile(p, []byte("data:"+rel), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, d := range []string{"bin", "skip", "skip/deep", "keep"} {
		if err := os.Mkdir(filepath.Join(src, d), 0o751); err != nil {
			t.Fatal(err)
		}
	}
	tool := w("bin/tool", 0o755|os.ModeSetuid, 5)
	if err := os.Link(tool, filepath.Join(src, "bin/tool-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("tool", filepath.Join(src, "bin/sym")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(src, "bin/sym"), 7, 7); err != nil {
		t.Fatal(err)
	}
	w("skip/deep/f", 0o644, 0)
	w("keep/f", 0o640, 9)
	if err := unix.Mknod(filepath.Join(src, "keep/wh"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(src, "keep/fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	xattrs := unix.Setxattr(tool, "user.keep", []byte("v"), 0) == nil
	if xattrs {
		if err := unix.Setxattr(tool, "user.drop", []byte("x"), 0); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
	for _, p := range []string{tool, filepath.Join(src, "bin"), src} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}

	dst := filepath.Join(t.TempDir(), "out")
	var excluded []string
	err := Copy(context.Background(), src, dst, Options{
		MapID: func(id uint32) uint32 { return id + 1000 },
		Exclude: func(rel string) bool {
			if rel == "skip" {
				excluded = append(excluded, rel)
				return true
			}
			return false
		},
		Xattr: func(_, name string) (bool, error) { return name != "user.drop", nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(excluded) != 1 {
		t.Errorf("Exclude matched %v, want [skip] once (nothing beneath it visited)", excluded)
	}
	if _, err := os.Lstat(filepath.Join(dst, "skip")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("excluded dir copied: %v", err)
	}

	st := lstat(t, filepath.Join(dst, "bin/tool"))
	if st.Uid != 1005 || st.Gid != 1005 {
		t.Errorf("tool owner %d:%d, want 1005:1005", st.Uid, st.Gid)
	}
	if st.Mode&0o7777 != 0o4755 {
		t.Errorf("tool mode %o, want 4755 (set-uid kept after chown)", st.Mode&0o7777)
	}
	if got := time.Unix(st.Mtim.Unix()); !got.Equal(old) {
		t.Errorf("tool mtime %v, want %v", got, old)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "bin/tool")); err != nil || string(b) != "data:bin/tool" {
		t.Errorf("tool content %q, %v", b, err)
	}
	if ln := lstat(t, filepath.Join(dst, "bin/tool-link")); ln.Ino != st.Ino {
		t.Errorf("hard link not kept: inodes %d and %d", ln.Ino, st.Ino)
	}
	sym := lstat(t, filepath.Join(dst, "bin/sym"))
	if target, _ := os.Readlink(filepath.Join(dst, "bin/sym")); target != "tool" || sym.Uid != 1007 {
		t.Errorf("symlink -> %q owned by %d, want tool, 1007", target, sym.Uid)
	}
	for _, d := range []string{"", "bin"} {
		ds := lstat(t, filepath.Join(dst, d))
		if ds.Mode&0o7777 != lstat(t, filepath.Join(src, d)).Mode&0o7777 {
			t.Errorf("dir %q mode %o differs from source", d, ds.Mode&0o7777)
		}
		if ds.Uid != 1000 {
			t.Errorf("dir %q uid %d, want 1000", d, ds.Uid)
		}
		if got := time.Unix(ds.Mtim.Unix()); !got.Equal(old) {
			t.Errorf("dir %q mtime %v, want %v (set after its children)", d, got, old)
		}
	}
	if wh := lstat(t, filepath.Join(dst, "keep/wh")); wh.Mode&unix.S_IFMT != unix.S_IFCHR || wh.Rdev != 0 {
		t.Errorf("whiteout not a 0:0 char device: mode %o rdev %d", wh.Mode, wh.Rdev)
	}
	if f := lstat(t, filepath.Join(dst, "keep/fifo")); f.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("fifo copied as mode %o", f.Mode)
	}
	if xattrs {
		buf := make([]byte, 8)
		if n, err := unix.Lgetxattr(filepath.Join(dst, "bin/tool"), "user.keep", buf); err != nil || string(buf[:n]) != "v" {
			t.Errorf("user.keep = %q, %v", buf[:n], err)
		}
		if _, err := unix.Lgetxattr(filepath.Join(dst, "bin/tool"), "user.drop", buf); !errors.Is(err, unix.ENODATA) {
			t.Errorf("user.drop copied despite Xattr filter: %v", err)
		}
	}
}

func TestCopyIntoEmptyDir(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Copy(context.Background(), src, dst, Options{}); err != nil {
		t.Fatalf("copy into existing empty dir: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || string(b) != "x" {
		t.Fatalf("f = %q, %v", b, err)
	}
	// dst now holds f: a second copy must refuse it rather than merge.
	if err := Copy(context.Background(), src, dst, Options{}); err == nil {
		t.Fatal("copy into non-empty dir succeeded")
	}
}

func TestCopyErrors(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	refuse := errors.New("refused")
	if err := unix.Setxattr(filepath.Join(src, "f"), "user.bad", []byte("1"), 0); err == nil {
		err := Copy(context.Background(), src, filepath.Join(t.TempDir(), "out"), Options{
			Xattr: func(_, name string) (bool, error) {
				if name == "user.bad" {
					return false, refuse
				}
				return true, nil
			},
		})
		if !errors.Is(err, refuse) {
			t.Errorf("Xattr error not returned: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Copy(ctx, src, filepath.Join(t.TempDir(), "out"), Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled copy: %v, want context.Canceled", err)
	}
}

func TestSplitNul(t *testing.T) {
	got := splitNul([]byte("a\x00\x00bc\x00d"))
	if len(got) != 3 || got[0] != "a" || got[1] != "bc" || got[2] != "d" {
		t.Errorf("splitNul = %q", got)
	}
}
