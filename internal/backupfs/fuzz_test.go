package backupfs

import (
	"bytes"
	"context"
	"io"
	"iter"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob"
)

// fuzzInput turns fuzz bytes into manifest entries.
type fuzzInput struct{ b []byte }

func (f *fuzzInput) next() byte {
	if len(f.b) == 0 {
		return 0
	}
	c := f.b[0]
	f.b = f.b[1:]
	return c
}

var (
	fuzzNames   = []string{"a", "b", "etc", "passwd", ".cove-restore-1", "x\xff", "t"}
	fuzzTargets = []string{"/", "..", "../..", "../outside", "a", "/etc", "t/a", "t/b/etc"}
	fuzzXattrs  = []string{"user.x", "trusted.overlay.redirect", "trusted.overlay.opaque", xattrCap, xattrACL, "security.x", "system.x"}
	fuzzIDs     = []uint32{0, 1000, OverflowID, 70000, 4000000000}
)

func (f *fuzzInput) path(s *sandbox) string {
	var parts []string
	switch f.next() % 8 {
	case 0:
		parts = append(parts, "u")
	case 1:
		return "."
	default:
		parts = append(parts, "t")
	}
	for range f.next() % 4 {
		parts = append(parts, fuzzNames[int(f.next())%len(fuzzNames)])
	}
	return strings.Join(parts, "/")
}

func (f *fuzzInput) entries(s *sandbox) []backuprepo.Entry {
	var out []backuprepo.Entry
	if f.next()&4 == 0 { // mostly a target root to restore below
		out = append(out, backuprepo.Entry{Path: "t", Type: backuprepo.TypeDir, Mode: 0o755})
	}
	for len(f.b) > 0 && len(out) < 64 {
		e := backuprepo.Entry{Path: f.path(s), Mode: uint32(f.next())<<4 | uint32(f.next()), Mtime: int64(f.next()) << 30}
		e.Mode &= 0o7777
		e.UID, e.GID = fuzzIDs[int(f.next())%len(fuzzIDs)], fuzzIDs[int(f.next())%len(fuzzIDs)]
		switch f.next() % 6 {
		case 0, 1:
			e.Type = backuprepo.TypeDir
			e.Opaque = f.next()%4 == 0
		case 2:
			e.Type, e.Target = backuprepo.TypeFile, strings.Repeat("z", int(f.next()))
		case 3:
			e.Type = backuprepo.TypeSymlink
			if e.Target = fuzzTargets[int(f.next())%len(fuzzTargets)]; e.Target == "../outside" && f.next()%2 == 0 {
				e.Target = s.outside
			}
		case 4:
			e.Type, e.Target = backuprepo.TypeHardlink, f.path(s)
		case 5:
			e.Type = backuprepo.TypeWhiteout
		}
		if n := f.next() % 3; n > 0 {
			e.Xattrs = map[string][]byte{}
			for range n {
				v := make([]byte, f.next()%30)
				for i := range v {
					v[i] = f.next()
				}
				e.Xattrs[fuzzXattrs[int(f.next())%len(fuzzXattrs)]] = v
			}
		}
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b backuprepo.Entry) int { return backuprepo.ComparePaths(a.Path, b.Path) })
	return slices.CompactFunc(out, func(a, b backuprepo.Entry) bool { return a.Path == b.Path })
}

// FuzzRestore restores manifests built from fuzz input (symlinks to the
// host's root, to a directory beside the target, hard links anywhere,
// paths below links and files, trusted.* attributes, odd owners): nothing
// outside the target is ever created or changed.
func FuzzRestore(f *testing.F) {
	// Seeds (see entries for the encoding): a symlink to "/" then
	// etc/passwd below it; a symlink to the directory beside the target
	// then a file below it; a hard link through a symlink to /etc; an
	// opaque directory with an overlay redirect attribute and a whiteout.
	f.Add([]byte{0, 2, 1, 0, 0, 0, 0, 0, 0, 3, 0, 0, 2, 3, 0, 2, 3, 1, 0xa4, 0, 0, 0, 2, 5, 0})
	f.Add([]byte{0, 2, 1, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 2, 2, 0, 1, 1, 0xa4, 0, 0, 0, 2, 5, 0})
	f.Add([]byte{0, 2, 1, 0, 0, 0, 0, 0, 0, 3, 5, 0, 2, 1, 1, 0, 0, 0, 0, 0, 4, 2, 2, 0, 3, 0})
	f.Add([]byte{0, 2, 1, 0, 0x1e, 0xd, 0, 0, 0, 0, 0, 1, 4, '/', 'e', 't', 'c', 1, 2, 1, 1, 0, 0, 0, 0, 0, 5, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		requireRoot(t)
		var passwd unix.Stat_t
		havePasswd := unix.Lstat("/etc/passwd", &passwd) == nil
		k, err := backuprepo.ParseKey(bytes.Repeat([]byte{7}, backuprepo.KeySize))
		must(t, err)
		repo := backuprepo.New(&memStore{objs: map[string][]byte{}}, k, nil)
		s := newSandbox(t)
		in := &fuzzInput{b: data}
		ctx := context.Background()
		w, err := repo.NewWriter(ctx, "fuzz", testMeta())
		must(t, err)
		for _, e := range in.entries(s) {
			if e.Type == backuprepo.TypeFile {
				refs, size, err := w.StoreContent(ctx, strings.NewReader(e.Target))
				must(t, err)
				e.Target, e.Chunks, e.Size = "", refs, size
			}
			_ = w.Add(ctx, e) // entries a manifest cannot hold are refused
		}
		_, err = w.Commit(ctx)
		must(t, err)
		overlay := len(data) > 0 && data[0]%2 == 0 // the first byte: also whether "t" is in the backup
		_, err = Restore(ctx, repo, "fuzz", []Source{{Name: "t", Dir: s.target, Overlay: overlay}}, RestoreOptions{Map: mapB})
		if err != nil {
			t.Fatalf("restore: %v", err)
		}
		s.untouched(t)
		var after unix.Stat_t
		if havePasswd && (unix.Lstat("/etc/passwd", &after) != nil || after.Mtim != passwd.Mtim || after.Ino != passwd.Ino || after.Nlink != passwd.Nlink) {
			t.Fatal("/etc/passwd changed")
		}
		// Everything in the target is owned within range B.
		err = walkOwners(s.target, func(p string, st *unix.Stat_t) {
			if !mapB.contains(st.Uid, mapB.HostUID) && st.Uid != 0 || !mapB.contains(st.Gid, mapB.HostGID) && st.Gid != 0 {
				t.Errorf("%s owned by %d:%d, outside range B", p, st.Uid, st.Gid)
			}
		})
		must(t, err)
	})
}

func (m IDMap) contains(h, base uint32) bool { _, ok := m.inside(h, base); return ok }

// walkOwners calls f for every entry below dir (not dir itself, which the
// runner made), without following symlinks.
func walkOwners(dir string, f func(string, *unix.Stat_t)) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := dir + "/" + e.Name()
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		f(p, &st)
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := walkOwners(p, f); err != nil {
				return err
			}
		}
	}
	return nil
}

// memStore is an in-memory blob.Store for the fuzzer (no fsync per chunk).
type memStore struct {
	mu   sync.Mutex
	objs map[string][]byte
}

func (s *memStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objs[key] = b
	return nil
}

func (s *memStore) Get(ctx context.Context, key string, rng blob.Range) (io.ReadCloser, error) {
	s.mu.Lock()
	b, ok := s.objs[key]
	s.mu.Unlock()
	if !ok {
		return nil, blob.NotFound(key)
	}
	if !rng.IsWhole() {
		if rng.Offset >= int64(len(b)) {
			return nil, blob.ErrRangeNotSatisfiable
		}
		b = b[rng.Offset:]
		if rng.Length > 0 && rng.Length < int64(len(b)) {
			b = b[:rng.Length]
		}
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (s *memStore) Stat(ctx context.Context, key string) (blob.Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objs[key]
	if !ok {
		return blob.Info{}, blob.NotFound(key)
	}
	return blob.Info{Key: key, Size: int64(len(b))}, nil
}

func (s *memStore) List(ctx context.Context, prefix string) iter.Seq2[blob.Info, error] {
	s.mu.Lock()
	var infos []blob.Info
	for k, b := range s.objs {
		if strings.HasPrefix(k, prefix) {
			infos = append(infos, blob.Info{Key: k, Size: int64(len(b))})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(infos, func(a, b blob.Info) int { return strings.Compare(a.Key, b.Key) })
	return func(yield func(blob.Info, error) bool) {
		for _, i := range infos {
			if !yield(i, nil) {
				return
			}
		}
	}
}

func (s *memStore) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objs, key)
	return nil
}
