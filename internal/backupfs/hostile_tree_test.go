package backupfs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/confine"
)

// storedContents returns every file content of backup name.
func storedContents(t *testing.T, repo *backuprepo.Repo, name string) map[string][]byte {
	t.Helper()
	m, err := repo.OpenManifest(context.Background(), name)
	must(t, err)
	out := map[string][]byte{}
	for {
		e, err := m.Next()
		if err == io.EOF {
			return out
		}
		must(t, err)
		if e.Type == backuprepo.TypeFile {
			var buf bytes.Buffer
			must(t, repo.ReadFile(context.Background(), e, &buf))
			out[e.Path] = buf.Bytes()
		}
	}
}

// TestSwappedFileNeverRead replaces files between the listing and the open
// with a symlink to a host secret, a hard link to it, and a FIFO (that a
// naive open would block on): the secret never reaches the backup, the
// walk does not hang, the swapped names are listed.
func TestSwappedFileNeverRead(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "shadow")
	secretContent := []byte("root:$6$host-secret-hash:19000:0:99999:7:::\n")
	must(t, os.WriteFile(secret, secretContent, 0o600))
	targets := []string{secret}
	if _, err := os.Stat("/etc/shadow"); err == nil {
		targets = append(targets, "/etc/shadow")
	}

	src := emptyDir(t, "src")
	names := []string{"a-symlink", "b-hardlink", "c-fifo", "d-plain"}
	for _, n := range names {
		writeFile(t, filepath.Join(src, n), []byte("innocent "+n), 0o644, int(mapA.HostUID), int(mapA.HostGID))
	}
	for _, link := range targets {
		t.Run(link, func(t *testing.T) {
			for _, n := range names {
				p := filepath.Join(src, n)
				os.Remove(p)
				writeFile(t, p, []byte("innocent "+n), 0o644, int(mapA.HostUID), int(mapA.HostGID))
			}
			var opens countOpens
			opens.install(t, func(e *confine.Entry) {
				p := filepath.Join(src, e.Rel)
				switch e.Rel {
				case "a-symlink":
					must(t, os.Remove(p))
					must(t, os.Symlink(link, p))
				case "b-hardlink":
					must(t, os.Remove(p))
					// A hard link to the test's own secret (never to a
					// host file: linking changes its ctime).
					must(t, os.Link(secret, p))
				case "c-fifo":
					must(t, os.Remove(p))
					must(t, unix.Mkfifo(p, 0o666))
				}
			})
			name := "swap-" + strings.ReplaceAll(link, "/", "_")
			res := backup(t, repo, name, "", mapA, Source{Name: "workspace", Dir: src})
			if len(opens.got()) != len(names) {
				t.Errorf("opened %q", opens.got())
			}
			want := []string{"workspace/a-symlink: replaced while being read", "workspace/b-hardlink: replaced while being read", "workspace/c-fifo: replaced while being read"}
			if !slices.Equal(res.Skipped, want) {
				t.Errorf("skipped %q, want %q", res.Skipped, want)
			}
			linkContent, err := os.ReadFile(link)
			must(t, err)
			got := storedContents(t, repo, name)
			for p, c := range got {
				if (len(linkContent) > 0 && bytes.Contains(c, linkContent)) || bytes.Contains(c, secretContent) {
					t.Errorf("%s: the backup holds the content of %s", p, link)
				}
			}
			if string(got["workspace/d-plain"]) != "innocent d-plain" || len(got) != 1 {
				t.Errorf("backed up %d files, d-plain %q", len(got), got["workspace/d-plain"])
			}
		})
	}
}

// TestHostileTree backs up a tree with every special file, symlink loops
// and escapes, and a 10k-entry directory: special files are skipped and
// listed (a FIFO never opened), links kept as links, nothing followed.
func TestHostileTree(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	root := t.TempDir()
	ws, up := filepath.Join(root, "ws"), filepath.Join(root, "up")
	must(t, os.Mkdir(ws, 0o755))
	must(t, os.Mkdir(up, 0o755))
	must(t, unix.Mkfifo(filepath.Join(ws, "fifo"), 0o666))
	l, err := net.Listen("unix", filepath.Join(ws, "sock"))
	if err != nil {
		t.Fatalf("unix socket: %v", err)
	}
	defer l.Close()
	must(t, unix.Mknod(filepath.Join(ws, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Mknod(filepath.Join(ws, "disk"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 0))))
	must(t, unix.Mknod(filepath.Join(ws, "not-a-whiteout"), unix.S_IFCHR, 0)) // 0/0 outside an overlay
	must(t, unix.Mknod(filepath.Join(up, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	for name, target := range map[string]string{"loop": "loop", "root": "/", "up": "..", "self": ".", "etc": "/etc", "shadow": "/etc/shadow"} {
		must(t, os.Symlink(target, filepath.Join(ws, name)))
	}
	many := filepath.Join(ws, "many")
	must(t, os.Mkdir(many, 0o755))
	const n = 10000
	for i := range n {
		must(t, os.WriteFile(filepath.Join(many, fmt.Sprintf("f%05d", i)), nil, 0o644))
	}
	res := backup(t, repo, "b", "", mapA, Source{Name: "workspace", Dir: ws}, Source{Name: "upper", Dir: up, Overlay: true})
	want := []string{
		"upper/null: character device",
		"workspace/disk: block device",
		"workspace/fifo: fifo",
		"workspace/not-a-whiteout: character device",
		"workspace/null: character device",
		"workspace/sock: socket",
	}
	if !slices.Equal(res.Skipped, want) || res.SkippedCount != int64(len(want)) {
		t.Errorf("skipped %q (%d), want %q", res.Skipped, res.SkippedCount, want)
	}
	if res.Files != n {
		t.Errorf("%d files backed up, want %d", res.Files, n)
	}
	tg := []Source{{Name: "workspace", Dir: emptyDir(t, "ws")}, {Name: "upper", Dir: emptyDir(t, "up"), Overlay: true}}
	rres, err := Restore(context.Background(), repo, "b", tg, RestoreOptions{Map: mapB})
	if err != nil || rres.FailedCount != 0 || rres.Files != n {
		t.Fatalf("restore: %v %+v", err, rres)
	}
	for name, target := range map[string]string{"loop": "loop", "root": "/", "up": "..", "self": ".", "etc": "/etc", "shadow": "/etc/shadow"} {
		if got, err := os.Readlink(filepath.Join(tg[0].Dir, name)); err != nil || got != target {
			t.Errorf("%s: %q %v, want a link to %q", name, got, err, target)
		}
	}
	for _, name := range []string{"fifo", "sock", "null", "disk", "not-a-whiteout"} {
		if _, err := os.Lstat(filepath.Join(tg[0].Dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s restored (%v)", name, err)
		}
	}
	ents, err := os.ReadDir(filepath.Join(tg[0].Dir, "many"))
	if err != nil || len(ents) != n {
		t.Errorf("many: %d entries %v", len(ents), err)
	}
}

// TestDeepTree: directories nested deeper than the walk goes are listed,
// the rest of the tree backed up (the backup does not fail).
func TestDeepTree(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	d, err := os.Open(src)
	must(t, err)
	// Built through descriptors: the path is longer than PATH_MAX.
	fd := int(d.Fd())
	for range confine.MaxDepth + 5 {
		must(t, unix.Mkdirat(fd, "d", 0o755))
		nfd, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		must(t, err)
		if fd != int(d.Fd()) {
			unix.Close(fd)
		}
		fd = nfd
	}
	unix.Close(fd)
	d.Close()
	writeFile(t, filepath.Join(src, "z"), []byte("after the deep tree"), 0o644, 0, 0)
	res := backup(t, repo, "deep", "", mapA, Source{Name: "ws", Dir: src})
	if len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0], "nested deeper than") || res.Files != 1 {
		t.Errorf("skipped %q, %d files", res.Skipped, res.Files)
	}
}

// TestHugeSparseFile: a file larger than a backup stores (a sparse disk
// image) is skipped and listed without being read; the backup succeeds.
func TestHugeSparseFile(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	f, err := os.Create(filepath.Join(src, "disk.img"))
	must(t, err)
	must(t, f.Truncate(backuprepo.MaxFileSize+1))
	must(t, f.Close())
	writeFile(t, filepath.Join(src, "small"), []byte("kept"), 0o644, 0, 0)
	var opens countOpens
	opens.install(t, nil)
	res := backup(t, repo, "b", "", mapA, Source{Name: "ws", Dir: src})
	if !slices.Equal(res.Skipped, []string{"ws/disk.img: larger than 256 GiB"}) || res.Files != 1 || !slices.Equal(opens.got(), []string{"small"}) {
		t.Errorf("skipped %q, %d files, opened %q", res.Skipped, res.Files, opens.got())
	}
}

// TestManyLinkedFiles: past maxLinks files with several names, further
// names are stored as copies (memory bounded), listed once; restored
// content is the same.
func TestManyLinkedFiles(t *testing.T) {
	requireRoot(t)
	orig := maxLinks
	maxLinks = 2
	t.Cleanup(func() { maxLinks = orig })
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	for i := range 4 {
		p := filepath.Join(src, fmt.Sprintf("f%d", i))
		writeFile(t, p, []byte(p), 0o644, 0, 0)
		must(t, os.Link(p, p+"-link"))
	}
	res := backup(t, repo, "b", "", mapA, Source{Name: "ws", Dir: src})
	if res.SkippedCount != 1 || !strings.Contains(res.Skipped[0], "stored as copies") || res.Files != 6 {
		t.Errorf("skipped %q, %d files (2 linked pairs, 4 copies)", res.Skipped, res.Files)
	}
	tg := emptyDir(t, "t")
	if _, err := Restore(context.Background(), repo, "b", []Source{{Name: "ws", Dir: tg}}, RestoreOptions{Map: mapB}); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		p := filepath.Join(src, fmt.Sprintf("f%d", i))
		for _, n := range []string{"", "-link"} {
			got, err := os.ReadFile(filepath.Join(tg, filepath.Base(p)+n))
			if err != nil || string(got) != p {
				t.Errorf("%s%s: %q %v", p, n, got, err)
			}
		}
	}
}

// TestSparseRestore: a file of zeros (many copies of one chunk) restores
// with its content and holes.
func TestSparseRestore(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	zeros := make([]byte, 40<<20)
	copy(zeros[len(zeros)-5:], "tail!")
	writeFile(t, filepath.Join(src, "zeros"), zeros, 0o644, 0, 0)
	backup(t, repo, "b", "", mapA, Source{Name: "ws", Dir: src})
	tg := emptyDir(t, "t")
	if _, err := Restore(context.Background(), repo, "b", []Source{{Name: "ws", Dir: tg}}, RestoreOptions{Map: mapB}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(tg, "zeros"))
	if err != nil || !bytes.Equal(got, zeros) {
		t.Fatalf("zeros restored wrong (%d bytes, %v)", len(got), err)
	}
	var st unix.Stat_t
	must(t, unix.Stat(filepath.Join(tg, "zeros"), &st))
	if st.Blocks*512 >= st.Size/2 {
		t.Errorf("%d bytes allocated for %d: not sparse", st.Blocks*512, st.Size)
	}
}
