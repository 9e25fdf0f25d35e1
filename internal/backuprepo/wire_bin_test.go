package backuprepo

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestBinaryRecordRoundTrip encodes entries with every field set (names
// that are not UTF-8, negative times, an empty attribute value, an opaque
// directory, the largest numbers) and decodes them back unchanged.
func TestBinaryRecordRoundTrip(t *testing.T) {
	id := ChunkID{1, 2, 3}
	entries := []Entry{
		{Path: ".", Type: TypeDir, Mode: 0o755, Mtime: -1, Opaque: true, Xattrs: map[string][]byte{"trusted.overlay.opaque": []byte("y"), "user.empty": {}}},
		{Path: "a/\xff\xfe", Type: TypeFile, Mode: 0o7777, UID: math.MaxUint32, GID: 7, Mtime: math.MinInt64, Ctime: math.MaxInt64,
			Inode: math.MaxUint64, Size: MaxChunkSize + 1, Chunks: []ChunkRef{{ID: id, Size: MaxChunkSize}, {ID: ChunkID{9}, Size: 1}}},
		{Path: "l", Type: TypeSymlink, Mode: 0o777, Target: "../\x00\xffx"},
		{Path: "h", Type: TypeHardlink, Target: "a/\xff\xfe"},
		{Path: "w", Type: TypeWhiteout},
	}
	for _, e := range entries {
		body := appendEntry(nil, &e, e.Chunks)
		got, refs, err := decodeBinRecord(body)
		if err != nil || refs != nil {
			t.Fatalf("%q: decoded (%v, %v)", e.Path, refs, err)
		}
		if !reflect.DeepEqual(*got, e) {
			t.Errorf("%q: decoded %+v, want %+v", e.Path, *got, e)
		}
	}
	refs := []ChunkRef{{ID: id, Size: 5}}
	if e, got, err := decodeBinRecord(appendChunks(nil, refs)); err != nil || e != nil || !reflect.DeepEqual(got, refs) {
		t.Errorf("chunk list decoded as (%v, %v, %v)", e, got, err)
	}
}

// TestReadsVersion1Manifest reads a backup written by the cove before
// binary records (JSON lines) and checks it reads as the same entries as
// the backup of the same tree written today.
func TestReadsVersion1Manifest(t *testing.T) {
	s, _ := newLocal(t)
	r := New(s, testKey(t, 1), nil)
	backup(t, r, "v2", tree(), "")
	want := readAll(t, r, "v2")
	var lines []string
	for _, e := range want {
		w := &wireEntry{T: e.Type, M: e.Mode, U: e.UID, G: e.GID, MT: e.Mtime, CT: e.Ctime, I: e.Inode,
			S: e.Size, O: e.Opaque, X: e.Xattrs, C: e.Chunks}
		w.P, w.PB = splitForJSON(e.Path)
		w.L, w.LB = splitForJSON(e.Target)
		line, err := json.Marshal(record{E: w})
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(line))
	}
	putManifest(t, r, "v1", lines, func(rt *root) {
		m, err := r.OpenManifest(context.Background(), "v2")
		if err != nil {
			t.Fatal(err)
		}
		rt.Summary = m.Summary()
	})
	got, err := readUntilError(t, r, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("version 1 read as\n%+v\nwant\n%+v", got, want)
	}
}

func splitForJSON(s string) (string, []byte) {
	if utf8.ValidString(s) {
		return s, nil
	}
	return "", []byte(s)
}

// TestHostileBinaryManifestRefused feeds the reader binary records that
// break the encoding or the rules: each is refused as corrupt, naming the
// backup, and nothing invalid is handed out.
func TestHostileBinaryManifestRefused(t *testing.T) {
	s, _ := newLocal(t)
	r := New(s, testKey(t, 1), nil)
	ent := func(e Entry) []byte { return appendRecord(nil, appendEntry(nil, &e, e.Chunks)) }
	raw := func(body ...[]byte) []byte { return appendRecord(nil, bytes.Join(body, nil)) }
	uv := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	dir := ent(Entry{Path: "a", Type: TypeDir})
	// A directory's record: its fields up to its target, then tail.
	dirBody := func(tail ...[]byte) []byte {
		e := Entry{Path: "d", Type: TypeDir}
		b := appendEntry(nil, &e, nil)
		return raw(append([][]byte{b[:len(b)-3]}, tail...)...) // without its flags, xattr and ref counts
	}
	ref := func(size uint64) []byte { return append(bytes.Repeat([]byte{0xab}, 32), uv(size)...) }
	for _, tc := range []struct {
		name    string
		piece   []byte
		entries int64
		want    string
	}{
		{"dotdot", ent(Entry{Path: "../etc/passwd", Type: TypeFile}), 1, "escapes the root"},
		{"absolute", ent(Entry{Path: "/etc/shadow", Type: TypeDir}), 1, "absolute"},
		{"NUL in path", ent(Entry{Path: "a\x00b", Type: TypeDir}), 1, "NUL"},
		{"mode bits", ent(Entry{Path: "a", Type: TypeDir, Mode: 0o170000}), 1, "outside 07777"},
		{"hard link out", ent(Entry{Path: "a", Type: TypeHardlink, Target: "../../etc/shadow"}), 1, "escapes the root"},
		{"chunks larger than size", ent(Entry{Path: "f", Type: TypeFile, Size: 10, Chunks: []ChunkRef{{ID: ChunkID{1}, Size: 5}, {ID: ChunkID{1}, Size: 6}}}), 1, "at most 1"},
		{"unknown record", raw([]byte("x")), 1, "unknown record"},
		{"empty record", uv(0), 1, "want 1 to"},
		{"record past the piece", append(uv(100), recEntry), 1, "cut short"},
		{"record too long", append(uv(maxLine+1), recEntry), 1, "want 1 to"},
		{"length unreadable", bytes.Repeat([]byte{0xff}, 11), 1, "length unreadable"},
		{"path longer than allowed", raw([]byte{recEntry}, uv(MaxPathLen+1)), 1, "path length"},
		{"path cut short", raw([]byte{recEntry}, uv(50), []byte("ab")), 1, "path cut short"},
		{"unknown type", raw([]byte{recEntry}, uv(1), []byte("a"), []byte{9}), 1, "unknown type 9"},
		{"no type", raw([]byte{recEntry}, uv(1), []byte("a"), []byte{0}), 1, "unknown type 0"},
		{"uid beyond 32 bits", raw([]byte{recEntry}, uv(1), []byte("a"), []byte{2}, uv(0), uv(1<<32)), 1, "uid"},
		{"absurd size", raw([]byte{recEntry}, uv(1), []byte("f"), []byte{1}, uv(0), uv(0), uv(0), uv(0), uv(0), uv(0), uv(MaxFileSize+1)), 1, "size"},
		{"unknown flags", dirBody([]byte{2}), 1, "unknown flags"},
		{"too many attributes", dirBody([]byte{0}, uv(MaxXattrs+1)), 1, "extended attribute count"},
		{"attribute value too large", dirBody([]byte{0}, uv(1), uv(6), []byte("user.a"), uv(MaxXattrSize+1)), 1, "extended attribute value"},
		{"attributes repeated", dirBody([]byte{0}, uv(2), uv(1), []byte("u"), uv(0), uv(1), []byte("u"), uv(0), uv(0)), 1, "out of order or repeated"},
		{"attributes out of order", dirBody([]byte{0}, uv(2), uv(1), []byte("v"), uv(0), uv(1), []byte("u"), uv(0), uv(0)), 1, "out of order or repeated"},
		{"refs cut short", dirBody([]byte{0}, uv(0), uv(1000)), 1, "1000 chunks cut short"},
		{"too many refs", dirBody([]byte{0}, uv(0), uv(refsPerRecord+1)), 1, "chunk count"},
		{"chunk of size 0", dirBody([]byte{0}, uv(0), uv(1), ref(0)), 1, "of size 0"},
		{"chunk too large", dirBody([]byte{0}, uv(0), uv(1), ref(MaxChunkSize+1)), 1, "chunk size"},
		{"content on a dir", dirBody([]byte{0}, uv(0), uv(1), ref(1)), 1, "has no content"},
		{"trailing bytes", dirBody([]byte{0}, uv(0), uv(0), []byte("x")), 1, "after the record's end"},
		{"continuation first", raw([]byte{recChunks}, uv(1), ref(1)), 1, "continues no file"},
		{"empty continuation", append(ent(Entry{Path: "f", Type: TypeFile, Size: 1, Chunks: []ChunkRef{{ID: ChunkID{1}, Size: 1}}}), raw([]byte{recChunks}, uv(0))...), 1, "empty chunk list"},
		{"too many chunks", append(ent(Entry{Path: "f", Type: TypeFile, Size: 2, Chunks: []ChunkRef{{ID: ChunkID{1}, Size: 1}}}), raw([]byte{recChunks}, uv(2), ref(1), ref(1))...), 1, "more chunks than its size allows"},
		{"repeated path", append(dir, dir...), 2, "out of order or repeated"},
		{"truncated", dir, 3, "truncated"},
		{"more than announced", append(dir, ent(Entry{Path: "b", Type: TypeDir})...), 1, "more entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			putRawManifest(t, r, "hostile", manifestVersion, tc.piece, tc.entries, nil)
			_, err := readUntilError(t, r, "hostile")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"hostile"`) {
				t.Errorf("error %v: want one naming the backup and saying %q", err, tc.want)
			}
			if !IsCorrupt(err) {
				t.Errorf("error %v is not ErrCorrupt", err)
			}
		})
	}
}

// BenchmarkRecordDecode decodes a typical file entry (one chunk) as a
// version 1 JSON line and as a version 2 binary record.
func BenchmarkRecordDecode(b *testing.B) {
	e := Entry{Path: "node_modules/some-package/lib/index.js", Type: TypeFile, Mode: 0o644, UID: 1000, GID: 1000,
		Mtime: 1.7e18, Ctime: 1.7e18 + 5, Inode: 1234567, Size: 4321, Chunks: []ChunkRef{{ID: ChunkID{1, 2, 3}, Size: 4321}}}
	w := &wireEntry{T: e.Type, M: e.Mode, U: e.UID, G: e.GID, MT: e.Mtime, CT: e.Ctime, I: e.Inode, S: e.Size, C: e.Chunks, P: e.Path}
	line, err := json.Marshal(record{E: w})
	if err != nil {
		b.Fatal(err)
	}
	body := appendEntry(nil, &e, e.Chunks)
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := decodeJSONRecord(line); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("binary", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := decodeBinRecord(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
