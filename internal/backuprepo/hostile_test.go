package backuprepo

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// putManifest writes a version 1 manifest of the given lines (one piece)
// sealed with r's key: what a compromised holder of the key (or a bug)
// could write. edit changes the root before it is sealed.
func putManifest(t testing.TB, r *Repo, name string, lines []string, edit func(*root)) {
	t.Helper()
	var piece []byte
	if len(lines) > 0 {
		piece = []byte(strings.Join(lines, "\n") + "\n")
	}
	putRawManifest(t, r, name, jsonVersion, piece, int64(len(lines)), edit)
}

// putRawManifest writes a manifest of version whose one piece (if not
// empty) is piece, announcing entries; edit changes the root before it is
// sealed.
func putRawManifest(t testing.TB, r *Repo, name string, version int, piece []byte, entries int64, edit func(*root)) {
	t.Helper()
	ctx := context.Background()
	rt := root{Version: version, Name: name}
	if len(piece) > 0 {
		ref, _, err := r.PutChunk(ctx, piece)
		if err != nil {
			t.Fatal(err)
		}
		rt.Pieces = []ChunkRef{ref}
	}
	rt.Summary.Entries = entries
	if edit != nil {
		edit(&rt)
	}
	doc, err := json.Marshal(rt)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := r.key.seal(kindManifest, manifestKey(name), doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.store.Put(ctx, manifestKey(name), bytes.NewReader(sealed), int64(len(sealed))); err != nil {
		t.Fatal(err)
	}
}

// readUntilError reads backup name to its end or first error, checking
// that every entry handed out obeys the rules.
func readUntilError(t *testing.T, r *Repo, name string) ([]*Entry, error) {
	t.Helper()
	m, err := r.OpenManifest(context.Background(), name)
	if err != nil {
		return nil, err
	}
	var got []*Entry
	for {
		e, err := m.Next()
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		if verr := e.Validate(); verr != nil {
			t.Errorf("reader handed out an invalid entry: %v", verr)
		}
		if len(got) > 0 && comparePaths(got[len(got)-1].Path, e.Path) >= 0 {
			t.Errorf("reader handed out %q after %q", e.Path, got[len(got)-1].Path)
		}
		got = append(got, e)
	}
}

func TestHostileManifestRefused(t *testing.T) {
	s, _ := newLocal(t)
	r := New(s, testKey(t, 1), nil)
	id := strings.Repeat("ab", 32)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name  string
		lines []string
		edit  func(*root)
		want  string
	}{
		{"dotdot", []string{`{"e":{"p":"../etc/passwd","t":"file"}}`}, nil, "escapes the root"},
		{"absolute", []string{`{"e":{"p":"/etc/shadow","t":"file"}}`}, nil, "absolute"},
		{"inner dotdot", []string{`{"e":{"p":"a/../../b","t":"dir"}}`}, nil, "not clean"},
		{"double slash", []string{`{"e":{"p":"a//b","t":"dir"}}`}, nil, "not clean"},
		{"NUL in bytes", []string{`{"e":{"pb":"` + b64("\xff\x00x") + `","t":"dir"}}`}, nil, "NUL"},
		{"UTF-8 as bytes", []string{`{"e":{"pb":"` + b64("a") + `","t":"dir"}}`}, nil, "valid UTF-8 given as bytes"},
		{"empty path", []string{`{"e":{"p":"","t":"dir"}}`}, nil, "empty"},
		{"root as a file", []string{`{"e":{"p":".","t":"file"}}`}, nil, "the root is a directory"},
		{"absurd size", []string{`{"e":{"p":"f","t":"file","s":4611686018427387904}}`}, nil, "out of range"},
		{"negative size", []string{`{"e":{"p":"f","t":"file","s":-1}}`}, nil, "out of range"},
		{"size without chunks", []string{`{"e":{"p":"f","t":"file","s":10}}`}, nil, "add up"},
		{"chunks larger than size", []string{`{"e":{"p":"f","t":"file","s":10,"c":["` + id + `:5","` + id + `:6"]}}`}, nil, "at most 1"},
		{"chunk too large", []string{`{"e":{"p":"f","t":"file","s":10,"c":["` + id + `:99999999"]}}`}, nil, "size must be 1 to"},
		{"bad chunk id", []string{`{"e":{"p":"f","t":"file","s":1,"c":["../../x:1"]}}`}, nil, "chunk id"},
		{"too many chunks", []string{`{"e":{"p":"f","t":"file","s":2,"c":["` + id + `:1"]}}`, `{"c":["` + id + `:1","` + id + `:1"]}`}, nil, "more chunks than its size allows"},
		{"content on a dir", []string{`{"e":{"p":"d","t":"dir","s":1}}`}, nil, "has no content"},
		{"continuation first", []string{`{"c":["` + id + `:1"]}`}, nil, "continues no file"},
		{"both in one line", []string{`{"e":{"p":"a","t":"dir"},"c":["` + id + `:1"]}`}, nil, "one entry or one chunk list"},
		{"repeated path", []string{`{"e":{"p":"a","t":"dir"}}`, `{"e":{"p":"a","t":"dir"}}`}, nil, "out of order or repeated"},
		{"out of order", []string{`{"e":{"p":"b","t":"dir"}}`, `{"e":{"p":"a","t":"dir"}}`}, nil, "out of order or repeated"},
		{"unknown field", []string{`{"e":{"p":"a","t":"dir","evil":1}}`}, nil, "unknown field"},
		{"unknown type", []string{`{"e":{"p":"a","t":"chardev"}}`}, nil, "unknown type"},
		{"mode bits", []string{`{"e":{"p":"a","t":"dir","m":61440}}`}, nil, "outside 07777"},
		{"huge xattr", []string{`{"e":{"p":"a","t":"dir","x":{"user.a":"` + base64.StdEncoding.EncodeToString(make([]byte, MaxXattrSize+1)) + `"}}}`}, nil, "extended attribute"},
		{"empty symlink", []string{`{"e":{"p":"a","t":"symlink"}}`}, nil, "symlink target"},
		{"hard link out", []string{`{"e":{"p":"a","t":"hardlink","l":"../../etc/shadow"}}`}, nil, "escapes the root"},
		{"target on a file", []string{`{"e":{"p":"a","t":"file","l":"x"}}`}, nil, "has no target"},
		{"not JSON", []string{`{"e":`}, nil, "unexpected EOF"},
		{"truncated", []string{`{"e":{"p":"a","t":"dir"}}`}, func(rt *root) { rt.Summary.Entries = 3 }, "truncated"},
		{"more than announced", []string{`{"e":{"p":"a","t":"dir"}}`, `{"e":{"p":"b","t":"dir"}}`}, func(rt *root) { rt.Summary.Entries = 1 }, "more entries"},
		{"version", nil, func(rt *root) { rt.Version = packedVersion + 1 }, "version " + strconv.Itoa(packedVersion+1)},
		{"other name", nil, func(rt *root) { rt.Name = "other" }, "manifest of backup"},
		{"absurd count", nil, func(rt *root) { rt.Summary.Entries = 1 << 40 }, "out of range"},
		{"missing piece", nil, func(rt *root) { rt.Pieces = []ChunkRef{{Size: 1}} }, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			putManifest(t, r, "hostile", tc.lines, tc.edit)
			_, err := readUntilError(t, r, "hostile")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"hostile"`) {
				t.Errorf("error %v: want one naming the backup and saying %q", err, tc.want)
			}
			if tc.want != "not found" && !IsCorrupt(err) {
				t.Errorf("error %v is not ErrCorrupt", err)
			}
		})
	}
}

func TestLongChunkListRoundTrip(t *testing.T) {
	// A file of more than refsPerRecord chunks spans continuation lines.
	ctx := context.Background()
	s, _ := newLocal(t)
	r := New(s, testKey(t, 1), nil)
	ref, _, err := r.PutChunk(ctx, randomBytes(3, MinChunkSize))
	if err != nil {
		t.Fatal(err)
	}
	n := 2*refsPerRecord + 3
	e := Entry{Path: "f", Type: TypeFile, Size: int64(n) * MinChunkSize}
	for range n {
		e.Chunks = append(e.Chunks, ref)
	}
	w, err := r.NewWriter(ctx, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(ctx, e); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, r, "b")
	if len(got) != 1 || !slices.Equal(got[0].Chunks, e.Chunks) || got[0].Size != e.Size {
		t.Fatalf("read %d entries, want 1 of %d chunks", len(got), n)
	}
}

func TestComparePaths(t *testing.T) {
	ordered := []string{".", ".a", "a", "a/b", "a/b/c", "a/c", "a-c", "a.b", "b", "\xff"}
	for i := range ordered {
		for j := range ordered {
			c := comparePaths(ordered[i], ordered[j])
			if (i < j) != (c < 0) || (i == j) != (c == 0) {
				t.Errorf("comparePaths(%q, %q) = %d", ordered[i], ordered[j], c)
			}
		}
	}
}
