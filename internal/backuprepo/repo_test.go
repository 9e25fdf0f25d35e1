package backuprepo

import (
	"bytes"
	"context"
	"io"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"
)

type item struct {
	e       Entry
	content []byte
}

// tree returns a small environment tree in walk order, with every entry
// type, a multi-chunk file, non-UTF-8 names and a file duplicated.
func tree() []item {
	small := []byte("export PS1='$ '\n")
	big := randomBytes(1, MaxChunkSize+MaxChunkSize/2) // at least two chunks
	f := func(p string, mode uint32, content []byte, ino uint64) item {
		return item{Entry{Path: p, Type: TypeFile, Mode: mode, UID: 1000, GID: 1000, Mtime: 1e18 + int64(ino),
			Ctime: 2e18 + int64(ino), Inode: ino, Size: int64(len(content))}, content}
	}
	d := func(p string, opaque bool) item {
		return item{e: Entry{Path: p, Type: TypeDir, Mode: 0o755, Mtime: 1e18, Opaque: opaque}}
	}
	tool := f("bin/tool", 0o4755, big, 2)
	tool.e.UID, tool.e.Xattrs = 0, map[string][]byte{"security.capability": {1, 0, 0, 2, 0, 0x20, 0, 0}, "user.note": []byte("x")}
	return []item{
		d(".", false),
		f(".bashrc", 0o644, small, 1),
		d("bin", false),
		tool,
		{e: Entry{Path: "bin/tool-link", Type: TypeHardlink, Target: "bin/tool"}},
		f("empty", 0o600, nil, 3),
		d("lib", true),
		{e: Entry{Path: "lib/gone", Type: TypeWhiteout}},
		f("name-\xff\xfe", 0o644, []byte("latin-1 name"), 4),
		d("src", false),
		{e: Entry{Path: "src/link", Type: TypeSymlink, Mode: 0o777, Target: "../\xffnot-utf8"}},
		f("src/main.go", 0o644, []byte("package main\n"), 5),
		f("src/main.go.copy", 0o644, small, 6),
	}
}

// backup writes items as backup name, reusing prev's unchanged files
// (whose content must then not be read).
func backup(t *testing.T, r *Repo, name string, items []item, prev string) Summary {
	t.Helper()
	ctx := context.Background()
	w, err := r.NewWriter(ctx, name, Metadata{Time: time.Unix(1e9, 0).UTC(), Trigger: "manual", Previous: prev})
	if err != nil {
		t.Fatal(err)
	}
	var p *Previous
	if prev != "" {
		m, err := r.OpenManifest(ctx, prev)
		if err != nil {
			t.Fatal(err)
		}
		p = NewPrevious(m)
	}
	for _, it := range items {
		if it.e.Type != TypeFile {
			if err := w.Add(ctx, it.e); err != nil {
				t.Fatal(err)
			}
			continue
		}
		pe, err := p.Find(it.e.Path)
		if err != nil {
			t.Fatal(err)
		}
		if Unchanged(pe, FileStat{Size: it.e.Size, Mtime: it.e.Mtime, Ctime: it.e.Ctime, Inode: it.e.Inode}) {
			err = w.Reuse(ctx, it.e, pe)
		} else {
			err = w.AddFile(ctx, it.e, bytes.NewReader(it.content))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	sum, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// checkRestore checks that backup name holds exactly items.
func checkRestore(t *testing.T, r *Repo, name string, items []item) {
	t.Helper()
	got := readAll(t, r, name)
	if len(got) != len(items) {
		t.Fatalf("backup %s: %d entries, want %d", name, len(got), len(items))
	}
	for i, it := range items {
		g, want := *got[i], it.e
		if want.Type == TypeFile {
			if c := contentOf(t, r, &g); !bytes.Equal(c, it.content) {
				t.Errorf("%q: restored %d bytes differing from the %d backed up", want.Path, len(c), len(it.content))
			}
		}
		g.Chunks, want.Chunks = nil, nil
		if g.Xattrs == nil {
			g.Xattrs = map[string][]byte{}
		}
		if want.Xattrs == nil {
			want.Xattrs = map[string][]byte{}
		}
		if !maps.EqualFunc(g.Xattrs, want.Xattrs, bytes.Equal) {
			t.Errorf("%q: xattrs %v, want %v", want.Path, g.Xattrs, want.Xattrs)
		}
		g.Xattrs, want.Xattrs = nil, nil
		if !reflect.DeepEqual(g, want) {
			t.Errorf("entry %d:\n got  %+v\n want %+v", i, g, want)
		}
	}
}

func TestRoundTripTree(t *testing.T) {
	s, _ := newLocal(t)
	r := New(s, testKey(t, 1), nil)
	items := tree()
	sum := backup(t, r, "env-a/b1", items, "")
	checkRestore(t, r, "env-a/b1", items)
	var files, bytes int64
	for _, it := range items {
		if it.e.Type == TypeFile {
			files++
			bytes += int64(len(it.content))
		}
	}
	if sum.Entries != int64(len(items)) || sum.Files != files || sum.Bytes != bytes {
		t.Errorf("summary %+v: want %d entries, %d files, %d bytes", sum, len(items), files, bytes)
	}
	m, err := r.OpenManifest(context.Background(), "env-a/b1")
	if err != nil {
		t.Fatal(err)
	}
	if md := m.Metadata(); md.Trigger != "manual" || !md.Time.Equal(time.Unix(1e9, 0)) {
		t.Errorf("metadata %+v", md)
	}
}

// distinctBytes is the content a tree stores: each distinct file once.
func distinctBytes(items []item) int64 {
	seen := map[string]bool{}
	var n int64
	for _, it := range items {
		if it.e.Type == TypeFile && !seen[string(it.content)] {
			seen[string(it.content)] = true
			n += int64(len(it.content))
		}
	}
	return n
}

func TestDedupAcrossBackupsAndEnvironments(t *testing.T) {
	s, _ := newLocal(t)
	r := New(s, testKey(t, 1), nil)
	items := tree()
	first := backup(t, r, "env-a/b1", items, "")
	if want := distinctBytes(items); first.BytesNew != want || first.BytesReused != first.Bytes-want {
		t.Errorf("first backup: %d bytes new, %d reused; want %d new (the duplicate file stored once), %d reused",
			first.BytesNew, first.BytesReused, want, first.Bytes-want)
	}
	packsBefore := keys(t, s, PacksPrefix)

	// Another environment of the same content: nothing new is stored.
	other := backup(t, r, "env-b/b1", items, "")
	if other.BytesNew != 0 || other.ChunksNew != 0 || other.BytesReused != other.Bytes {
		t.Errorf("second environment: %d bytes (%d chunks) new, %d reused of %d; want nothing new", other.BytesNew, other.ChunksNew, other.BytesReused, other.Bytes)
	}
	// No pack more: even its manifest's piece is the first's (the same
	// entries); only its root is stored.
	if after := keys(t, s, PacksPrefix); len(packsBefore) == 0 || !slices.Equal(after, packsBefore) || other.StoredBytes > 1000 {
		t.Errorf("second environment: %d packs after, %d before; %d bytes stored (the first %d)", len(after), len(packsBefore), other.StoredBytes, first.StoredBytes)
	}
	checkRestore(t, r, "env-b/b1", items)
}

// forbidden is a file content that must not be read.
type forbidden struct{ t *testing.T }

func (f forbidden) Read([]byte) (int, error) {
	f.t.Error("an unchanged file was read")
	return 0, io.EOF
}

func TestIncrementalReusesUnchangedFiles(t *testing.T) {
	s, _ := newLocal(t)
	r := New(s, testKey(t, 1), nil)
	items := tree()
	backup(t, r, "env-a/b1", items, "")

	next := slices.Clone(items)
	changed := -1
	for i := range next {
		switch {
		case next[i].e.Path == "src/main.go":
			next[i].content = []byte("package main\n\nfunc main() {}\n")
			next[i].e.Size, next[i].e.Ctime = int64(len(next[i].content)), next[i].e.Ctime+1
			changed = i
		case next[i].e.Type == TypeFile:
			next[i].content = nil // not to be read
		}
	}
	// Unchanged files go through Reuse: give them a content that fails the
	// test if read.
	ctx := context.Background()
	w, err := r.NewWriter(ctx, "env-a/b2", Metadata{Trigger: "periodic", Previous: "env-a/b1"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.OpenManifest(ctx, "env-a/b1")
	if err != nil {
		t.Fatal(err)
	}
	p := NewPrevious(m)
	for i, it := range next {
		if it.e.Type != TypeFile {
			if err := w.Add(ctx, it.e); err != nil {
				t.Fatal(err)
			}
			continue
		}
		pe, err := p.Find(it.e.Path)
		if err != nil || pe == nil {
			t.Fatalf("%q: previous entry %v, %v", it.e.Path, pe, err)
		}
		var rd io.Reader = forbidden{t}
		if i == changed {
			rd = bytes.NewReader(it.content)
		}
		if Unchanged(pe, FileStat{Size: it.e.Size, Mtime: it.e.Mtime, Ctime: it.e.Ctime, Inode: it.e.Inode}) {
			err = w.Reuse(ctx, it.e, pe)
		} else {
			err = w.AddFile(ctx, it.e, rd)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	sum, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(next[changed].content)); sum.BytesNew != want || sum.BytesReused != sum.Bytes-want {
		t.Errorf("incremental: %d bytes new, %d reused of %d; want %d new", sum.BytesNew, sum.BytesReused, sum.Bytes, want)
	}
	for i := range next {
		if next[i].e.Type == TypeFile && next[i].content == nil {
			next[i].content = items[i].content
		}
	}
	checkRestore(t, r, "env-a/b2", next)
	checkRestore(t, r, "env-a/b1", items) // the previous one is untouched
}

func TestUnchanged(t *testing.T) {
	prev := &Entry{Path: "f", Type: TypeFile, Size: 10, Mtime: 5, Ctime: 6, Inode: 7}
	same := FileStat{Size: 10, Mtime: 5, Ctime: 6, Inode: 7}
	if !Unchanged(prev, same) {
		t.Error("identical stat: not reused")
	}
	for name, cur := range map[string]FileStat{
		"size":  {Size: 11, Mtime: 5, Ctime: 6, Inode: 7},
		"mtime": {Size: 10, Mtime: 4, Ctime: 6, Inode: 7},
		"ctime (content rewritten, mtime put back)": {Size: 10, Mtime: 5, Ctime: 9, Inode: 7},
		"inode (file replaced)":                     {Size: 10, Mtime: 5, Ctime: 6, Inode: 8},
	} {
		if Unchanged(prev, cur) {
			t.Errorf("%s changed: reused without reading", name)
		}
	}
	if Unchanged(nil, same) || Unchanged(&Entry{Path: "f", Type: TypeFile, Size: 10, Mtime: 5, Inode: 7}, FileStat{Size: 10, Mtime: 5, Inode: 7}) {
		t.Error("no previous entry, or one without ctime: reused")
	}
}
