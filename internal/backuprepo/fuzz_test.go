package backuprepo

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/covedev/cove/internal/blob"
)

// seedManifest returns the decrypted root and first piece of a real
// backup of tree().
func seedManifest(f *testing.F, r *Repo) (doc, piece []byte) {
	ctx := context.Background()
	w, err := r.NewWriter(ctx, "seed", Metadata{Trigger: "manual"})
	if err != nil {
		f.Fatal(err)
	}
	for _, it := range tree() {
		if it.e.Type == TypeFile {
			err = w.AddFile(ctx, it.e, bytes.NewReader(it.content))
		} else {
			err = w.Add(ctx, it.e)
		}
		if err != nil {
			f.Fatal(err)
		}
	}
	if _, err := w.Commit(ctx); err != nil {
		f.Fatal(err)
	}
	m, err := r.OpenManifest(ctx, "seed")
	if err != nil {
		f.Fatal(err)
	}
	rc, err := r.store.Get(ctx, manifestKey("seed"), blob.Range{})
	if err != nil {
		f.Fatal(err)
	}
	sealed, _ := io.ReadAll(rc)
	rc.Close()
	if doc, err = r.key.open(kindManifest, manifestKey("seed"), sealed); err != nil {
		f.Fatal(err)
	}
	if piece, err = r.GetChunk(ctx, m.root.Pieces[0]); err != nil {
		f.Fatal(err)
	}
	return doc, piece
}

// FuzzManifestReader feeds the reader any root document and any piece
// (as if sealed by a holder of the key): it must never panic, and every
// entry it hands out must obey the rules (valid, in order, counted).
func FuzzManifestReader(f *testing.F) {
	r := New(newMem(), testKey(f, 1), nil)
	doc, piece := seedManifest(f, r)
	f.Add(doc, piece)
	f.Add(doc, []byte(`{"e":{"p":"../x","t":"file"}}`+"\n"))
	f.Add([]byte(`{"version":1,"name":"f","summary":{"entries":2,"files":1,"bytes":3}}`),
		[]byte(`{"e":{"p":".","t":"dir"}}`+"\n"+`{"e":{"p":"a","t":"file","s":3,"c":["`+string(bytes.Repeat([]byte("ab"), 32))+`:3"]}}`+"\n"))
	// The same in version 2's binary records, and a file continued.
	dot, a := Entry{Path: ".", Type: TypeDir}, Entry{Path: "a", Type: TypeFile, Size: 3, Chunks: []ChunkRef{{ID: ChunkID{0xab}, Size: 3}}}
	bin := appendRecord(appendRecord(nil, appendEntry(nil, &dot, nil)), appendEntry(nil, &a, a.Chunks))
	f.Add([]byte(`{"version":2,"name":"f","summary":{"entries":2,"files":1,"bytes":3}}`), bin)
	a.Size, a.Chunks = MinChunkSize+3, append(a.Chunks, ChunkRef{ID: ChunkID{0xcd}, Size: MinChunkSize})
	f.Add([]byte(`{"version":2,"name":"f","summary":{"entries":1,"files":1,"bytes":`+strconv.Itoa(MinChunkSize+3)+`}}`),
		appendRecord(appendRecord(nil, appendEntry(nil, &a, a.Chunks[:1])), appendChunks(nil, a.Chunks[1:])))
	f.Fuzz(func(t *testing.T, doc, piece []byte) {
		ctx := context.Background()
		r := New(newMem(), testKey(t, 1), nil)
		m, err := r.parseRoot(ctx, "f", doc)
		if err != nil {
			if !IsCorrupt(err) {
				t.Fatalf("root refused without ErrCorrupt: %v", err)
			}
			return
		}
		m.root.Pieces = nil
		if len(piece) > 0 && len(piece) <= MaxChunkSize {
			ref, _, err := r.PutChunk(ctx, piece)
			if err != nil {
				t.Fatal(err)
			}
			m.root.Pieces = []ChunkRef{ref}
		}
		var last *Entry
		var n int64
		for {
			e, err := m.Next()
			if err == io.EOF {
				if n != m.root.Summary.Entries {
					t.Fatalf("EOF after %d entries, %d announced", n, m.root.Summary.Entries)
				}
				return
			}
			if err != nil {
				if !IsCorrupt(err) {
					t.Fatalf("refused without ErrCorrupt: %v", err)
				}
				if _, again := m.Next(); again != io.EOF {
					t.Fatalf("after an error, Next gave %v", again)
				}
				return
			}
			if verr := e.Validate(); verr != nil {
				t.Fatalf("invalid entry handed out: %v", verr)
			}
			if last != nil && comparePaths(last.Path, e.Path) >= 0 {
				t.Fatalf("%q handed out after %q", e.Path, last.Path)
			}
			last = e
			n++
		}
	})
}

// FuzzChunkOpen feeds the chunk reader any stored object, and the opener
// any authenticated body (as a holder of the key could seal): it must
// never panic, never return content that is not the chunk's, and never
// decompress more than MaxPayload.
func FuzzChunkOpen(f *testing.F) {
	k := testKey(f, 1)
	good, err := k.seal(kindChunk, "seed", []byte("hello"))
	if err != nil {
		f.Fatal(err)
	}
	enc, _ := zstd.NewWriter(nil)
	f.Add(good, byte(0))
	f.Add(enc.EncodeAll([]byte("hello hello hello"), nil), byte(1))
	f.Add(enc.EncodeAll(make([]byte, 2*MaxPayload), nil), byte(1))
	f.Add([]byte("plain"), byte(2))
	f.Fuzz(func(t *testing.T, data []byte, mode byte) {
		ctx := context.Background()
		k := testKey(t, 1)
		switch mode % 3 {
		case 0: // any object stored under a chunk's key
			s := newMem()
			r := New(s, k, nil)
			id := r.ChunkIDOf([]byte("the real content"))
			s.m[id.key()] = data
			got, err := r.GetChunk(ctx, ChunkRef{ID: id})
			if err == nil && r.ChunkIDOf(got) != id {
				t.Fatalf("GetChunk returned content that is not the chunk's")
			}
			if err != nil && !IsCorrupt(err) && !errors.Is(err, ErrWrongKey) {
				t.Fatalf("error without a category: %v", err)
			}
		case 1: // any authenticated body
			name := "x"
			got, err := k.open(kindChunk, name, sealRaw(t, k, kindChunk, name, data))
			if err == nil && len(got) > MaxPayload {
				t.Fatalf("decompressed %d bytes", len(got))
			}
			if err != nil && !IsCorrupt(err) {
				t.Fatalf("error without a category: %v", err)
			}
		default: // round trip
			if len(data) > MaxPayload {
				return
			}
			sealed, err := k.seal(kindChunk, "n", data)
			if err != nil {
				t.Fatal(err)
			}
			got, err := k.open(kindChunk, "n", sealed)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("round trip: %v", err)
			}
			if _, err := k.open(kindChunk, "m", sealed); !IsCorrupt(err) {
				t.Fatalf("opened under another name: %v", err)
			}
		}
	})
}

// FuzzPackIndex: any index payload, authenticated under the key (so only
// its parsing stands between it and a reader), over any pack bytes: the
// decoder accepts only entries in order, apart, each of a sealed chunk's
// size and within a pack; a read through it returns the chunk's own
// content or a categorized error, never another content.
func FuzzPackIndex(f *testing.F) {
	f.Add(encodeIndex([]PackEntry{{ID: ChunkID{1}, Offset: 0, Length: 100}}), []byte("not a pack"))
	f.Add(encodeIndex([]PackEntry{{ID: ChunkID{1}, Offset: 10, Length: 60}, {ID: ChunkID{2}, Offset: 70, Length: 60}}), make([]byte, 200))
	f.Add([]byte{1, 2, 3}, []byte{})
	f.Fuzz(func(t *testing.T, index, pack []byte) {
		entries, err := decodeIndex("index/x", index)
		if err != nil {
			if !IsCorrupt(err) {
				t.Fatalf("error without a category: %v", err)
			}
			return
		}
		var end uint64
		for _, e := range entries {
			if uint64(e.Offset) < end || e.Length < uint32(minSealed) || e.Length > uint32(maxSealed) || uint64(e.Offset)+uint64(e.Length) > maxPackSize {
				t.Fatalf("accepted entry %+v after %d", e, end)
			}
			end = uint64(e.Offset) + uint64(e.Length)
		}
		ctx := context.Background()
		s := newMem()
		r := New(s, testKey(t, 1), nil)
		p := PackID{7}
		sealed, err := r.key.seal(kindIndex, r.IndexKey(p), index)
		if err != nil {
			return
		}
		s.m[r.IndexKey(p)] = sealed
		s.m[r.PackKey(p)] = pack
		if err := r.LoadIndex(ctx); err != nil {
			t.Fatal(err)
		}
		for _, e := range entries[:min(len(entries), 8)] {
			got, err := r.GetChunk(ctx, ChunkRef{ID: e.ID})
			if err == nil && r.ChunkIDOf(got) != e.ID {
				t.Fatal("GetChunk returned content that is not the chunk's")
			}
			if err != nil && !IsCorrupt(err) && !errors.Is(err, ErrWrongKey) && !blob.IsNotFound(err) {
				t.Fatalf("error without a category: %v", err)
			}
		}
	})
}
