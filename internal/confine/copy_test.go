package confine

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCopyTree(t *testing.T) {
	requireRoot(t)
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
	err := CopyTree(context.Background(), openDir(t, src), dst, CopyOptions{
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

func TestCopyTreeIntoEmptyDir(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CopyTree(context.Background(), openDir(t, src), dst, CopyOptions{}); err != nil {
		t.Fatalf("copy into existing empty dir: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || string(b) != "x" {
		t.Fatalf("f = %q, %v", b, err)
	}
	// dst now holds f: a second copy must refuse it rather than merge.
	if err := CopyTree(context.Background(), openDir(t, src), dst, CopyOptions{}); err == nil {
		t.Fatal("copy into non-empty dir succeeded")
	}
}

func TestCopyTreeErrors(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	refuse := errors.New("refused")
	if err := unix.Setxattr(filepath.Join(src, "f"), "user.bad", []byte("1"), 0); err == nil {
		err := CopyTree(context.Background(), openDir(t, src), filepath.Join(t.TempDir(), "out"), CopyOptions{
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
	if err := CopyTree(ctx, openDir(t, src), filepath.Join(t.TempDir(), "out"), CopyOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled copy: %v, want context.Canceled", err)
	}
}

func TestSplitNul(t *testing.T) {
	got := splitNul([]byte("a\x00\x00bc\x00d"))
	if len(got) != 3 || got[0] != "a" || got[1] != "bc" || got[2] != "d" {
		t.Errorf("splitNul = %q", got)
	}
}

// TestCopyTreeSymlinkSwap performs the feature-snapshot attack (F2): while
// the runner copies a directory, the environment renames it away and puts
// a symlink to a host directory in its place. The copy must go on reading
// the directory it opened, never the host's files.
func TestCopyTreeSymlinkSwap(t *testing.T) {
	requireRoot(t)
	src := t.TempDir()
	secret := secretDir(t)
	write(t, filepath.Join(src, "zzz/a-big"), strings.Repeat("x", 4096))
	write(t, filepath.Join(src, "zzz/ssh_user_ca"), "decoy")
	write(t, filepath.Join(src, "zzz/sub/f"), "decoy")
	swapped := false
	swap := func(rel string) bool {
		if rel == "zzz/a-big" && !swapped {
			swapped = true
			// What the attacker's inotify watcher does on IN_OPEN.
			if err := os.Rename(filepath.Join(src, "zzz"), filepath.Join(src, "zzz.real")); err != nil {
				t.Error(err)
			}
			if err := os.Symlink(secret, filepath.Join(src, "zzz")); err != nil {
				t.Error(err)
			}
		}
		return false
	}
	dst := filepath.Join(t.TempDir(), "layer")
	err := CopyTree(context.Background(), openDir(t, src), dst, CopyOptions{Exclude: swap})
	if !swapped {
		t.Fatal("the swap never happened")
	}
	if err != nil {
		t.Logf("copy failed (acceptable): %v", err)
	}
	if strings.Contains(readTree(t, dst), "HOST-SECRET-KEY") {
		t.Fatal("the host's secret was copied through the swapped symlink")
	}
	if err == nil {
		if b, _ := os.ReadFile(filepath.Join(dst, "zzz/ssh_user_ca")); string(b) != "decoy" {
			t.Errorf("zzz/ssh_user_ca = %q, want the original decoy", b)
		}
	}
}

// TestCopyTreeRootSwap: the source directory itself is opened once; a
// symlink put where it was afterwards changes nothing.
func TestCopyTreeRootSwap(t *testing.T) {
	requireRoot(t)
	parent := t.TempDir()
	secret := secretDir(t)
	src := filepath.Join(parent, "upper")
	write(t, filepath.Join(src, "f"), "mine")
	d := openDir(t, src)
	if err := os.Rename(src, src+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, src); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out")
	if err := CopyTree(context.Background(), d, dst, CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := readTree(t, dst); strings.Contains(got, "HOST-SECRET") || !strings.Contains(got, "mine") {
		t.Fatalf("copied %q", got)
	}
}

// readTree concatenates the names and contents of every file below dir
// (symlinks are not followed).
func readTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		b.WriteString(p + "\n")
		if d.Type().IsRegular() {
			c, _ := os.ReadFile(p)
			b.Write(c)
		}
		return nil
	})
	return b.String()
}

func TestCopyTreeNoOwnersAndTypes(t *testing.T) {
	requireRoot(t)
	src := t.TempDir()
	write(t, filepath.Join(src, "bin/tool"), "x")
	if err := os.Chown(filepath.Join(src, "bin/tool"), 1234, 1234); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "bin/tool"), 0o4755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out")
	if err := CopyTree(context.Background(), openDir(t, src), dst, CopyOptions{NoOwners: true, Types: Regular | Directory | Symlink}); err != nil {
		t.Fatal(err)
	}
	st := lstat(t, filepath.Join(dst, "bin/tool"))
	if st.Uid != 0 || st.Mode&0o7777 != 0o755 {
		t.Errorf("tool uid %d mode %o, want 0 and 755 (no owners, no set-id)", st.Uid, st.Mode&0o7777)
	}
	if _, err := os.Lstat(filepath.Join(dst, "fifo")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("fifo copied although not in Types: %v", err)
	}
}

// TestCopyTreeKeepsHoles: a file the environment made sparse (a huge hole
// costs it nothing) costs the copy no more than its data.
func TestCopyTreeKeepsHoles(t *testing.T) {
	src := t.TempDir()
	f, err := os.Create(filepath.Join(src, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	const size = 4 << 30
	if _, err := f.WriteAt([]byte("tail"), size-4); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dst := filepath.Join(t.TempDir(), "out")
	if err := CopyTree(context.Background(), openDir(t, src), dst, CopyOptions{NoOwners: true}); err != nil {
		t.Fatal(err)
	}
	st := lstat(t, filepath.Join(dst, "sparse"))
	if st.Size != size {
		t.Fatalf("size %d, want %d", st.Size, size)
	}
	if used := st.Blocks * 512; used > 1<<20 {
		t.Fatalf("the copy allocates %d bytes for a %d-byte sparse file", used, size)
	}
	b := make([]byte, 4)
	g, _ := os.Open(filepath.Join(dst, "sparse"))
	defer g.Close()
	if _, err := g.ReadAt(b, size-4); err != nil || string(b) != "tail" {
		t.Fatalf("tail %q, %v", b, err)
	}
}

// TestWalkLeaksNoDescriptor: a process the runner starts while it walks a
// hostile tree (a clone, a build) must not inherit the walked directory's
// descriptor, which would give it that tree past every boundary.
func TestWalkLeaksNoDescriptor(t *testing.T) {
	src := t.TempDir()
	write(t, filepath.Join(src, "a/b/c"), "x")
	childFDs := func() map[string]bool {
		out, err := exec.Command("ls", "/proc/self/fd").Output()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, fd := range strings.Fields(string(out)) {
			m[fd] = true
		}
		return m
	}
	before := childFDs() // what a child gets anyway (ls's own directory, what the test inherited)
	var leaked []string
	err := Walk(context.Background(), openDir(t, src), func(e *Entry) error {
		for fd := range childFDs() {
			if !before[fd] {
				leaked = append(leaked, e.Rel+":"+fd)
			}
		}
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(leaked) > 0 {
		t.Fatalf("children inherited descriptors: %v", leaked)
	}
}
