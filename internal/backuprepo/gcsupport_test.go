package backuprepo

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

// A backup older than MaxWriterAge is refused before its manifest is
// written: sweep markers that could concern it may be gone.
func TestCommitGCSafeRefusesOldWriter(t *testing.T) {
	ctx := context.Background()
	s, _ := newLocal(t)
	repo := New(s, testKey(t, 1), nil)
	w, err := repo.NewWriter(ctx, "old", Metadata{Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile(ctx, Entry{Path: "f", Mode: 0o644}, bytes.NewReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	w.start = time.Now().Add(-MaxWriterAge - time.Minute)
	if _, err := w.CommitGCSafe(ctx); !errors.Is(err, ErrWriterTooOld) {
		t.Fatalf("commit of an old writer: %v", err)
	}
	if _, err := s.Stat(ctx, ManifestKey("old")); err == nil {
		t.Fatal("the old writer's manifest was written")
	}
}

// Sweep markers are read only when sealed with the repository's key: one
// planted by someone without it, or another organization's, is ignored.
func TestSweepMarkersAuthenticated(t *testing.T) {
	ctx := context.Background()
	s, _ := newLocal(t)
	a, b := New(s, testKey(t, 1), nil), New(s, testKey(t, 2), nil)
	now := time.Now()
	if err := b.PutSweepMarker(ctx, SweepMarker{ID: "b", Start: now, Deadline: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	planted := []byte(`{"id":"x","start":"2026-01-01T00:00:00Z","deadline":"2099-01-01T00:00:00Z"}`)
	if err := s.Put(ctx, a.GCKey("sweeps/x"), bytes.NewReader(planted), int64(len(planted))); err != nil {
		t.Fatal(err)
	}
	ms, err := a.SweepMarkers(ctx)
	if err != nil || len(ms) != 0 {
		t.Fatalf("markers of a: %+v, %v", ms, err)
	}
	if ms, err := b.SweepMarkers(ctx); err != nil || len(ms) != 1 || ms[0].ID != "b" {
		t.Fatalf("markers of b: %+v, %v", ms, err)
	}
}

func TestParseChunkKey(t *testing.T) {
	id := New(nil, testKey(t, 1), nil).ChunkIDOf([]byte("x"))
	if got, ok := ParseChunkKey(ChunkKey(id)); !ok || got != id {
		t.Fatalf("round trip: %v %v", got, ok)
	}
	s := id.String()
	for _, k := range []string{"chunks/" + s, "chunks/zz/" + s, "chunks/" + s[:2] + "/" + s + "0", "chunks/" + s[:2] + "/" + s[:63] + "G", "manifests/" + s[:2] + "/" + s} {
		if _, ok := ParseChunkKey(k); ok {
			t.Errorf("%s parsed as a chunk key", k)
		}
	}
}
