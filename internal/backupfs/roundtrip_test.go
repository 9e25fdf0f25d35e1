package backupfs

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// richTrees lays out a workspace and an overlay upper directory owned in
// range m with every kind of entry a backup keeps, and returns them as
// sources.
func richTrees(t testing.TB, m IDMap) []Source {
	t.Helper()
	root := t.TempDir()
	ws, up := filepath.Join(root, "ws"), filepath.Join(root, "upper")
	u := func(id uint32) int { return int(m.HostUID + id) }
	g := func(id uint32) int { return int(m.HostGID + id) }
	for _, d := range []string{ws, up} {
		must(t, os.Mkdir(d, 0o755))
		must(t, os.Chown(d, u(1000), g(1000)))
	}
	mkdir := func(p string, mode os.FileMode, uid, gid int) {
		must(t, os.Mkdir(p, 0o700))
		must(t, os.Chown(p, uid, gid))
		must(t, os.Chmod(p, mode))
	}
	// Workspace: a repository-like tree.
	mkdir(filepath.Join(ws, "repo"), 0o755, u(1000), g(1000))
	mkdir(filepath.Join(ws, "repo", "sub"), 0o750, u(1000), g(100))
	mkdir(filepath.Join(ws, "shared"), 0o2775|os.ModeSetgid, u(1000), g(1000))
	must(t, os.Chmod(filepath.Join(ws, "shared"), 0o775|os.ModeSetgid))
	mkdir(filepath.Join(ws, "tmp"), 0o777, u(0), g(0))
	must(t, os.Chmod(filepath.Join(ws, "tmp"), 0o777|os.ModeSticky))
	writeFile(t, filepath.Join(ws, "repo", "README"), []byte("hello\n"), 0o644, u(1000), g(1000))
	writeFile(t, filepath.Join(ws, "repo", "empty"), nil, 0o600, u(1000), g(1000))
	writeFile(t, filepath.Join(ws, "repo", "big.bin"), randomBytes(1, 9<<20+12345), 0o644, u(1000), g(1000))
	// Mostly zeros: restored sparse, content the same.
	zeros := make([]byte, 6<<20)
	copy(zeros[3<<20:], "not only zeros")
	writeFile(t, filepath.Join(ws, "repo", "zeros.img"), zeros, 0o644, u(1000), g(1000))
	writeFile(t, filepath.Join(ws, "repo", "sub", "bad\xffname\x01"), []byte("non-UTF-8 name"), 0o640, u(1000), g(100))
	writeFile(t, filepath.Join(ws, "shared", "x"), []byte("x"), 0o664, u(1001), g(1000))
	// Hard links: three names of one file, in two directories.
	must(t, os.Link(filepath.Join(ws, "repo", "README"), filepath.Join(ws, "repo", "sub", "README.link")))
	must(t, os.Link(filepath.Join(ws, "repo", "README"), filepath.Join(ws, "shared", "README.2")))
	// Symlinks: relative, absolute (kept as text, never followed), dangling, a loop.
	for name, target := range map[string]string{"rel": "repo/README", "abs": "/etc/shadow", "dangling": "nope/nothing", "loop1": "loop2", "loop2": "loop1", "dot": ".."} {
		p := filepath.Join(ws, name)
		must(t, os.Symlink(target, p))
		must(t, os.Lchown(p, u(1000), g(1000)))
	}
	// Owner outside the range: overflow inside.
	writeFile(t, filepath.Join(ws, "foreign"), []byte("owned by host uid 1"), 0o644, 1, 1)
	// Extended attributes.
	must(t, unix.Setxattr(filepath.Join(ws, "repo", "README"), "user.note", []byte("a note"), 0))
	must(t, unix.Setxattr(filepath.Join(ws, "repo"), "user.dir", []byte{0, 1, 2}, 0))
	must(t, unix.Setxattr(filepath.Join(ws, "repo", "empty"), "user.empty", nil, 0))
	acl := make([]byte, 4+8*5)
	binary.LittleEndian.PutUint32(acl, aclVersion)
	for i, e := range []struct {
		tag, perm uint16
		id        uint32
	}{{1, 6, ^uint32(0)}, {aclUser, 4, m.HostUID + 1001}, {4, 4, ^uint32(0)}, {0x10, 4, ^uint32(0)}, {0x20, 0, ^uint32(0)}} {
		binary.LittleEndian.PutUint16(acl[4+8*i:], e.tag)
		binary.LittleEndian.PutUint16(acl[6+8*i:], e.perm)
		binary.LittleEndian.PutUint32(acl[8+8*i:], e.id)
	}
	must(t, unix.Setxattr(filepath.Join(ws, "shared", "x"), xattrACL, acl, 0))

	// Upper directory: installed tools with set-id bits and capabilities,
	// a whiteout, an opaque directory.
	for _, d := range []string{"usr", "usr/bin", "etc", "opt", "opt/tool", "home", "home/dev"} {
		mkdir(filepath.Join(up, d), 0o755, u(0), g(0))
	}
	must(t, os.Chown(filepath.Join(up, "home", "dev"), u(1000), g(1000)))
	writeFile(t, filepath.Join(up, "usr", "bin", "sudo"), []byte("#!fake sudo"), 0o4755|os.ModeSetuid, u(0), g(0))
	must(t, os.Chmod(filepath.Join(up, "usr", "bin", "sudo"), 0o755|os.ModeSetuid))
	writeFile(t, filepath.Join(up, "usr", "bin", "wall"), []byte("#!fake wall"), 0o755, u(0), g(5))
	must(t, os.Chmod(filepath.Join(up, "usr", "bin", "wall"), 0o755|os.ModeSetgid))
	writeFile(t, filepath.Join(up, "usr", "bin", "ping"), []byte("#!fake ping"), 0o755, u(0), g(0))
	must(t, unix.Setxattr(filepath.Join(up, "usr", "bin", "ping"), xattrCap, capV3(m.HostUID), 0))
	writeFile(t, filepath.Join(up, "usr", "bin", "arping"), []byte("#!fake arping"), 0o755, u(0), g(0))
	must(t, unix.Setxattr(filepath.Join(up, "usr", "bin", "arping"), xattrCap, capV2(), 0))
	writeFile(t, filepath.Join(up, "home", "dev", ".bashrc"), []byte("alias ll='ls -l'\n"), 0o644, u(1000), g(1000))
	must(t, unix.Mknod(filepath.Join(up, "etc", "motd"), unix.S_IFCHR, 0)) // whiteout
	must(t, unix.Setxattr(filepath.Join(up, "opt", "tool"), xattrOpaque, []byte("y"), 0))
	writeFile(t, filepath.Join(up, "opt", "tool", "v2"), []byte("new version"), 0o755, u(0), g(0))
	// Times last, directories included (children change them).
	old := time.Date(2021, 3, 4, 5, 6, 7, 891011121, time.UTC)
	for _, d := range []string{ws, up} {
		must(t, filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			ts := []unix.Timespec{unix.NsecToTimespec(old.UnixNano()), unix.NsecToTimespec(old.UnixNano())}
			return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		}))
		old = old.Add(time.Hour)
	}
	return []Source{{Name: "workspace", Dir: ws}, {Name: "upper", Dir: up, Overlay: true}}
}

// targetsFor returns empty targets named like sources.
func targetsFor(t testing.TB, sources []Source) []Source {
	t.Helper()
	var out []Source
	for _, s := range sources {
		out = append(out, Source{Name: s.Name, Dir: emptyDir(t, strings.ReplaceAll(s.Name, "/", "_")), Overlay: s.Overlay})
	}
	return out
}

func TestRoundTripIntoAnotherRange(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	sources := richTrees(t, mapA)
	res := backup(t, repo, "b1", "", mapA, sources...)
	if !res.Changed || res.Summary.Files == 0 {
		t.Fatalf("first backup: %+v", res)
	}
	if res.Overflow != 1 {
		t.Errorf("overflow %d, want 1 (the file owned by host uid 1)", res.Overflow)
	}
	targets := targetsFor(t, sources)
	var last Progress
	rres, err := Restore(context.Background(), repo, "b1", targets, RestoreOptions{Map: mapB, Progress: func(p Progress) { last = p }})
	if err != nil {
		t.Fatal(err)
	}
	if len(rres.Failed) != 0 || len(rres.Ignored) != 0 || len(rres.Missing) != 0 {
		t.Fatalf("restore: %+v", rres)
	}
	if rres.Files != res.Files || rres.Bytes != res.Bytes || last.Files != rres.Files || last.Bytes != rres.Bytes {
		t.Errorf("restored %d files %d bytes (progress %+v), backed up %d files %d bytes", rres.Files, rres.Bytes, last, res.Files, res.Bytes)
	}
	kinds := map[string]bool{}
	for i, s := range sources {
		src, dst := snapshot(t, s.Dir, mapA), snapshot(t, targets[i].Dir, mapB)
		sameTrees(t, src, dst)
		for _, n := range src {
			kinds[n.Type] = true
			kinds["link"] = kinds["link"] || n.Link != ""
			kinds["setuid"] = kinds["setuid"] || n.Mode&0o4000 != 0
			kinds["xattr"] = kinds["xattr"] || strings.Contains(n.Xattrs, xattrCap)
		}
	}
	for _, k := range []string{"dir", "file", "symlink", "chr 0", "link", "setuid", "xattr"} {
		if !kinds[k] {
			t.Errorf("the compared trees hold no %s: the test lost its coverage", k)
		}
	}
	// The host view: ids in range B, the foreign file as B's overflow id,
	// the v3 capability's root is B's root, the v2 one became it.
	ws, up := targets[0].Dir, targets[1].Dir
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(ws, "repo", "README"), &st))
	if st.Uid != mapB.HostUID+1000 || st.Gid != mapB.HostGID+1000 {
		t.Errorf("README owned by %d:%d, want %d:%d", st.Uid, st.Gid, mapB.HostUID+1000, mapB.HostGID+1000)
	}
	must(t, unix.Lstat(filepath.Join(ws, "foreign"), &st))
	if st.Uid != mapB.HostUID+OverflowID {
		t.Errorf("foreign file owned by %d, want %d", st.Uid, mapB.HostUID+OverflowID)
	}
	for _, name := range []string{"ping", "arping"} {
		buf := make([]byte, 64)
		n, err := unix.Getxattr(filepath.Join(up, "usr", "bin", name), xattrCap, buf)
		must(t, err)
		if n != capV3Size || binary.LittleEndian.Uint32(buf)&capRevMask != capRev3 || binary.LittleEndian.Uint32(buf[capV2Size:]) != mapB.HostUID {
			t.Errorf("%s capability %x, want a v3 for root %d", name, buf[:n], mapB.HostUID)
		}
	}
	// Sparse: the mostly-zero file holds fewer blocks than its size.
	must(t, unix.Lstat(filepath.Join(ws, "repo", "zeros.img"), &st))
	if st.Blocks*512 >= st.Size {
		t.Errorf("zeros.img: %d bytes allocated for %d: not sparse", st.Blocks*512, st.Size)
	}
}

func TestNestedNamesAndIgnoredTrees(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	mk := func(content string) string {
		d := emptyDir(t, "src")
		writeFile(t, filepath.Join(d, "f"), []byte(content), 0o644, int(mapA.HostUID), int(mapA.HostGID))
		return d
	}
	sources := []Source{
		{Name: "workspace", Dir: mk("ws")},
		{Name: "svc/db/upper", Dir: mk("db"), Overlay: true},
		{Name: "svc/cache/upper", Dir: mk("cache"), Overlay: true},
		{Name: "upper", Dir: mk("up"), Overlay: true},
	}
	backup(t, repo, "b", "", mapA, sources...)
	// Restore two of them; the others are listed as ignored.
	targets := targetsFor(t, []Source{sources[1], sources[3]})
	targets = append(targets, Source{Name: "volumes", Dir: emptyDir(t, "vol")})
	res, err := Restore(context.Background(), repo, "b", targets, RestoreOptions{Map: mapB})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Ignored, []string{"svc/cache/upper", "workspace"}) || !slices.Equal(res.Missing, []string{"volumes"}) || res.Files != 2 {
		t.Errorf("ignored %q, missing %q, %d files", res.Ignored, res.Missing, res.Files)
	}
	for i, want := range []string{"db", "up"} {
		got, err := os.ReadFile(filepath.Join(targets[i].Dir, "f"))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q %v", targets[i].Name, got, err)
		}
	}
	// Only the workspace: every other tree is named whole, as the runner
	// restores them one by one.
	res, err = Restore(context.Background(), repo, "b", []Source{{Name: "workspace", Dir: emptyDir(t, "ws")}}, RestoreOptions{Map: mapB})
	if err != nil || !slices.Equal(res.Ignored, []string{"svc/cache/upper", "svc/db/upper", "upper"}) {
		t.Errorf("ignored %q (%v)", res.Ignored, err)
	}
	// Overlapping names are refused.
	w, err := repo.NewWriter(context.Background(), "overlap", testMeta())
	must(t, err)
	_, err = Backup(context.Background(), w, []Source{{Name: "svc", Dir: sources[0].Dir}, {Name: "svc/db/upper", Dir: sources[1].Dir}}, BackupOptions{Map: mapA})
	if err == nil || !strings.Contains(err.Error(), "overlap") {
		t.Errorf("overlapping names: %v", err)
	}
}

// TestOverlayMarkers: an "xattr whiteout" (a file marked
// trusted.overlay.whiteout) is a whiteout, restored as the 0/0 device;
// overlay bookkeeping attributes are not stored, a redirect is listed; in
// a tree that is no upper directory the markers mean nothing and are not
// stored either.
func TestOverlayMarkers(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	up, ws := emptyDir(t, "up"), emptyDir(t, "ws")
	for _, d := range []string{up, ws} {
		writeFile(t, filepath.Join(d, "xwhiteout"), nil, 0o644, 0, 0)
		must(t, unix.Setxattr(filepath.Join(d, "xwhiteout"), xattrWhiteout, []byte("y"), 0))
		must(t, os.Mkdir(filepath.Join(d, "moved"), 0o755))
		must(t, unix.Setxattr(filepath.Join(d, "moved"), "trusted.overlay.redirect", []byte("/elsewhere"), 0))
		must(t, unix.Setxattr(filepath.Join(d, "moved"), "trusted.overlay.origin", []byte{1, 2}, 0))
		must(t, unix.Setxattr(filepath.Join(d, "moved"), xattrOpaque, []byte("y"), 0))
		// A host security label: not the environment's, not stored.
		must(t, unix.Setxattr(filepath.Join(d, "moved"), "security.test", []byte("system_u:object_r:x"), 0))
	}
	res := backup(t, repo, "b", "", mapA, Source{Name: "upper", Dir: up, Overlay: true}, Source{Name: "ws", Dir: ws})
	if !slices.Equal(res.Skipped, []string{"upper/moved: overlay redirect not kept", "ws/moved: overlay redirect not kept"}) {
		t.Errorf("skipped %q", res.Skipped)
	}
	m, err := repo.OpenManifest(context.Background(), "b")
	must(t, err)
	got := map[string]string{}
	for {
		e, err := m.Next()
		if err != nil {
			break
		}
		got[e.Path] = string(e.Type)
		if e.Opaque {
			got[e.Path] += " opaque"
		}
		if len(e.Xattrs) > 0 {
			t.Errorf("%s: attributes %v stored", e.Path, e.Xattrs)
		}
	}
	want := map[string]string{"upper": "dir", "upper/xwhiteout": "whiteout", "upper/moved": "dir opaque", "ws": "dir", "ws/xwhiteout": "file", "ws/moved": "dir"}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s: %q, want %q", p, got[p], w)
		}
	}
	tg := Source{Name: "upper", Dir: emptyDir(t, "up2"), Overlay: true}
	if _, err := Restore(context.Background(), repo, "b", []Source{tg}, RestoreOptions{Map: mapB}); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(tg.Dir, "xwhiteout"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("xwhiteout restored as mode %o rdev %d, want the 0/0 device", st.Mode, st.Rdev)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(tg.Dir, "moved"), xattrOpaque, buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("moved: opaque %q %v", buf[:n], err)
	}
}
