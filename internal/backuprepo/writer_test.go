package backuprepo

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/errdefs"
)

func TestManifestWrittenLast(t *testing.T) {
	ctx := context.Background()
	local, _ := newLocal(t)
	rec := &recordingStore{Store: local}
	r := New(rec, testKey(t, 1), nil)
	items := tree()
	w, err := r.NewWriter(ctx, "env-a/b1", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.e.Type == TypeFile {
			err = w.AddFile(ctx, it.e, bytes.NewReader(it.content))
		} else {
			err = w.Add(ctx, it.e)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if ks := keys(t, local, "manifests/"); len(ks) != 0 {
		t.Fatalf("manifest visible before Commit: %v", ks)
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.puts); n == 0 || rec.puts[n-1] != "manifests/env-a/b1" {
		t.Fatalf("puts %v: the manifest is not the last", rec.puts)
	}
	for i, k := range rec.puts[:len(rec.puts)-1] {
		_, p, isPack := ParsePackKey(k)
		if (!isPack || i+1 >= len(rec.puts) || rec.puts[i+1] != r.IndexKey(p)) && !strings.HasPrefix(k, IndexPrefix) {
			t.Errorf("put %q before the manifest: want packs, each followed by its index", k)
		}
	}
	if _, err := r.NewWriter(ctx, "env-a/b1", Metadata{}); !errdefs.Is(err, errdefs.CategoryAlreadyExists) {
		t.Errorf("second backup of the same name: %v, want AlreadyExists", err)
	}

	// A store failing in the middle of the content: no backup exists.
	for _, failPref := range []string{PacksPrefix, IndexPrefix, "manifests/"} {
		local, _ := newLocal(t)
		rec := &recordingStore{Store: local, failPref: failPref, failAt: 1}
		r := New(rec, testKey(t, 1), nil)
		err := func() error {
			w, err := r.NewWriter(ctx, "b", Metadata{})
			if err != nil {
				return err
			}
			for _, it := range items {
				if it.e.Type == TypeFile {
					err = w.AddFile(ctx, it.e, bytes.NewReader(it.content))
				} else {
					err = w.Add(ctx, it.e)
				}
				if err != nil {
					return err
				}
			}
			_, err = w.Commit(ctx)
			return err
		}()
		if err == nil {
			t.Fatalf("store failing on %s: backup succeeded", failPref)
		}
		if ks := keys(t, local, "manifests/"); len(ks) != 0 {
			t.Errorf("store failing on %s: manifest %v exists", failPref, ks)
		}
		if _, err := r.OpenManifest(ctx, "b"); !blob.IsNotFound(err) {
			t.Errorf("store failing on %s: opening the backup: %v, want not found", failPref, err)
		}
	}
}

func TestWriterRefusesBadEntries(t *testing.T) {
	ctx := context.Background()
	s, _ := newLocal(t)
	r := New(s, testKey(t, 1), nil)
	if _, err := r.NewWriter(ctx, "../x", Metadata{}); !errdefs.Is(err, errdefs.CategoryInvalidArgument) {
		t.Errorf("name ../x: %v", err)
	}
	w, err := r.NewWriter(ctx, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(ctx, Entry{Path: "b", Type: TypeDir}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []Entry{
		{Path: "a", Type: TypeDir},         // out of order
		{Path: "b", Type: TypeDir},         // repeated
		{Path: "c/../../x", Type: TypeDir}, // escaping
		{Path: "/etc", Type: TypeDir},
		{Path: "d", Type: TypeFile, Size: 5}, // size without content
	} {
		if err := w.Add(ctx, e); !errdefs.Is(err, errdefs.CategoryInvalidArgument) {
			t.Errorf("Add(%q): %v, want InvalidArgument", e.Path, err)
		}
	}
}

func TestConcurrentStoreContent(t *testing.T) {
	ctx := context.Background()
	s, _ := newLocal(t)
	r := unpacked(s, testKey(t, 1))
	w, err := r.NewWriter(ctx, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	// Four workers store the same two files at once.
	contents := [][]byte{randomBytes(11, 3*AvgChunkSize), randomBytes(12, MinChunkSize/2)}
	type result struct {
		i    int
		refs []ChunkRef
		err  error
	}
	done := make(chan result, 8)
	for i := range 8 {
		go func() {
			refs, _, err := w.StoreContent(ctx, bytes.NewReader(contents[i%2]))
			done <- result{i, refs, err}
		}()
	}
	var lists [2][][]ChunkRef
	for range 8 {
		res := <-done
		if res.err != nil {
			t.Fatal(res.err)
		}
		lists[res.i%2] = append(lists[res.i%2], res.refs)
	}
	if err := w.wait(); err != nil { // uploads run in the background
		t.Fatal(err)
	}
	for j, c := range contents {
		if len(lists[j]) != 4 {
			t.Fatalf("content %d: %d results, want 4", j, len(lists[j]))
		}
		for _, l := range lists[j][1:] {
			if !slices.Equal(l, lists[j][0]) {
				t.Errorf("content %d: workers got different chunk lists", j)
			}
		}
		e := &Entry{Path: "f", Type: TypeFile, Size: int64(len(c)), Chunks: lists[j][0]}
		if got := contentOf(t, r, e); !bytes.Equal(got, c) {
			t.Errorf("content %d does not read back", j)
		}
	}
	// Every chunk is counted once as stored or as found, never lost.
	var chunks int64
	for j := range contents {
		chunks += 4 * int64(len(lists[j][0]))
	}
	if w.sum.ChunksNew+w.sum.ChunksReused != chunks || w.sum.BytesNew+w.sum.BytesReused != 4*int64(len(contents[0])+len(contents[1])) {
		t.Errorf("summary %+v: want %d chunks counted", w.sum, chunks)
	}
	if n := int64(len(keys(t, s, "chunks/"))); n != int64(len(lists[0][0])+len(lists[1][0])) {
		t.Errorf("%d chunk objects stored, want one per distinct chunk (%d)", n, len(lists[0][0])+len(lists[1][0]))
	}
}
