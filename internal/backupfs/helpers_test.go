package backupfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob/localblob"
	"github.com/covedev/cove/internal/confine"
)

// Two id ranges: a backup taken in one restores into the other.
var (
	mapA = IDMap{HostUID: 300000, HostGID: 310000, Size: 65536}
	mapB = IDMap{HostUID: 500000, HostGID: 520000, Size: 65536}
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the walk and restore set owners, devices and trusted.* attributes")
	}
}

// newRepo returns a repository on a directory store and the store's
// directory.
func newRepo(t testing.TB) (*backuprepo.Repo, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "blobs")
	s, err := localblob.New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	k, err := backuprepo.ParseKey(bytes.Repeat([]byte{7}, backuprepo.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return backuprepo.New(s, k, nil), dir
}

// newRepoUnpacked is newRepo storing each chunk as an object of its own
// (as cove did before packs): for tests that damage, hold or count
// chunks one by one in the store.
func newRepoUnpacked(t testing.TB) (*backuprepo.Repo, string) {
	t.Helper()
	r, dir := newRepo(t)
	r.SetPacks(false)
	return r, dir
}

// backup takes backup name of sources, incremental over prev when not "".
func backup(t testing.TB, repo *backuprepo.Repo, name, prev string, m IDMap, sources ...Source) BackupResult {
	t.Helper()
	ctx := context.Background()
	w, err := repo.NewWriter(ctx, name, backuprepo.Metadata{Time: time.Now(), Trigger: "test", Previous: prev})
	if err != nil {
		t.Fatal(err)
	}
	opts := BackupOptions{Map: m, Log: testLog(t)}
	if prev != "" {
		if opts.Previous, err = repo.OpenManifest(ctx, prev); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Backup(ctx, w, sources, opts)
	if err != nil {
		t.Fatalf("backup %s: %v", name, err)
	}
	return res
}

// countOpens counts (by path in the source) the files Backup opens.
type countOpens struct {
	mu    sync.Mutex
	paths []string
}

func (c *countOpens) install(t testing.TB, before func(e *confine.Entry)) {
	t.Helper()
	orig := openFile
	openFile = func(e *confine.Entry) (*os.File, error) {
		c.mu.Lock()
		c.paths = append(c.paths, e.Rel)
		c.mu.Unlock()
		if before != nil {
			before(e)
		}
		return orig(e)
	}
	t.Cleanup(func() { openFile = orig })
}

func (c *countOpens) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.paths)
}

// randomBytes returns n incompressible bytes from seed.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, p string, data []byte, mode os.FileMode, uid, gid int) {
	t.Helper()
	must(t, os.WriteFile(p, data, 0o600))
	must(t, os.Lchown(p, uid, gid))
	must(t, os.Chmod(p, mode))
}

// capV2 and capV3 build security.capability values (cap_net_raw,
// effective).
func capV2() []byte {
	v := make([]byte, capV2Size)
	binary.LittleEndian.PutUint32(v, capRev2|1)
	binary.LittleEndian.PutUint32(v[4:], 1<<13)
	return v
}

func capV3(root uint32) []byte {
	v := make([]byte, capV3Size)
	binary.LittleEndian.PutUint32(v, capRev3|1)
	binary.LittleEndian.PutUint32(v[4:], 1<<13)
	binary.LittleEndian.PutUint32(v[capV2Size:], root)
	return v
}

// node is an entry of a tree as seen inside its environment: what a
// restore must reproduce.
type node struct {
	Path, Type     string
	Mode, UID, GID uint32
	Mtime          int64
	Target, Hash   string
	Size           int64
	Link           string // first path of a multiply linked file
	Xattrs         string
}

// snapshot walks dir (as root) and describes it inside the range m:
// owners and capability roots mapped, v1/v2 capabilities as the v3 of the
// environment's root (what a restore writes).
func snapshot(t testing.TB, dir string, m IDMap) []node {
	t.Helper()
	d, err := confine.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var out []node
	links := map[devIno]string{}
	err = confine.Walk(context.Background(), d, func(e *confine.Entry) error {
		st := e.Stat
		uid, _ := m.inside(st.Uid, m.HostUID)
		gid, _ := m.inside(st.Gid, m.HostGID)
		n := node{Path: e.Rel, Mode: st.Mode & 0o7777, UID: uid, GID: gid, Mtime: st.Mtim.Nano()}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			n.Type = "dir"
		case unix.S_IFLNK:
			n.Type = "symlink"
			n.Target, err = e.Readlink()
			if err != nil {
				return err
			}
		case unix.S_IFCHR:
			n.Type = fmt.Sprintf("chr %d", st.Rdev)
			if st.Rdev == 0 {
				n.UID, n.GID = 0, 0 // a whiteout's owner means nothing
			}
		case unix.S_IFREG:
			n.Type, n.Size = "file", st.Size
			if st.Nlink > 1 {
				k := devIno{st.Dev, st.Ino}
				if first, ok := links[k]; ok {
					n.Link = first
				} else {
					links[k] = e.Rel
				}
			}
			f, err := e.Open()
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			n.Hash = hex.EncodeToString(h.Sum(nil))
		default:
			n.Type = fmt.Sprintf("type %o", st.Mode&unix.S_IFMT)
		}
		xs, err := e.Xattrs()
		if err != nil {
			return err
		}
		var parts []string
		for k, v := range xs {
			if k == xattrCap && len(v) >= 4 {
				v = insideCap(v, m)
			}
			if k == xattrACL || k == xattrACLDef {
				v, _ = mapACL(v, func(id uint32, group bool) uint32 {
					if group {
						in, _ := m.inside(id, m.HostGID)
						return in
					}
					in, _ := m.inside(id, m.HostUID)
					return in
				})
			}
			parts = append(parts, fmt.Sprintf("%s=%x", k, v))
		}
		slices.Sort(parts)
		n.Xattrs = strings.Join(parts, ",")
		out = append(out, n)
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// insideCap is a capability as the environment m sees it, in the form a
// restore writes: a v3 whose rootid is an inside uid (a v1 or v2 one is
// the environment root's).
func insideCap(v []byte, m IDMap) []byte {
	magic := binary.LittleEndian.Uint32(v)
	out := make([]byte, capV3Size)
	binary.LittleEndian.PutUint32(out, capRev3|magic&^capRevMask)
	copy(out[4:capV2Size], v[4:min(len(v), capV2Size)])
	if magic&capRevMask == capRev3 && len(v) == capV3Size {
		in, _ := m.inside(binary.LittleEndian.Uint32(v[capV2Size:]), m.HostUID)
		binary.LittleEndian.PutUint32(out[capV2Size:], in)
	}
	return out
}

// sameTrees fails t when the trees differ (each seen inside its range).
func sameTrees(t testing.TB, a, b []node) {
	t.Helper()
	am := map[string]node{}
	for _, n := range a {
		am[n.Path] = n
	}
	bm := map[string]node{}
	for _, n := range b {
		bm[n.Path] = n
	}
	for _, n := range a {
		if m, ok := bm[n.Path]; !ok {
			t.Errorf("%q missing from the restored tree", n.Path)
		} else if n != m {
			t.Errorf("%q differs:\n  source   %v\n  restored %v", n.Path, n, m)
		}
	}
	for _, n := range b {
		if _, ok := am[n.Path]; !ok {
			t.Errorf("%q restored but not in the source", n.Path)
		}
	}
}

// emptyDir returns a new empty directory under t.TempDir().
func emptyDir(t testing.TB, name string) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), name)
	must(t, os.Mkdir(d, 0o700))
	return d
}

func testMeta() backuprepo.Metadata {
	return backuprepo.Metadata{Time: time.Now(), Trigger: "test"}
}

// testLog logs to the test's output.
func testLog(t testing.TB) *slog.Logger {
	if _, bench := t.(*testing.B); bench {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
