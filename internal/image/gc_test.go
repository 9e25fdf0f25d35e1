//go:build linux

package image

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func diffIDOf(t *testing.T, l v1.Layer) string {
	t.Helper()
	d, err := l.DiffID()
	if err != nil {
		t.Fatal(err)
	}
	return d.Hex
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// TestCollectGarbage is R1 of the 2026-12 review: images no environment
// uses (their manifests, configs and layers), chowned copies for ranges
// nobody holds and interrupted work go; what is in use stays, and so does
// anything changed after the cutoff.
func TestCollectGarbage(t *testing.T) {
	requireRoot(t)
	start := time.Now()
	s, root := newTestStore(t)
	ctx := ctxT(t)
	base := baseLayer(t)
	topA := layer(t, entry{name: "a", body: "image a\n"})
	topB := layer(t, entry{name: "b", body: "image b\n"})
	a, err := s.Import(ctx, "cove-build/a:latest", buildImage(t, v1.Config{}, base, topA))
	if err != nil {
		t.Fatal(err)
	}
	imgB := buildImage(t, v1.Config{}, base, topB)
	b, err := s.Import(ctx, "cove-build/b:latest", imgB)
	if err != nil {
		t.Fatal(err)
	}
	cfgB, err := imgB.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	mkdir := func(p string) string {
		t.Helper()
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	baseHex, topAHex, topBHex := diffIDOf(t, base), diffIDOf(t, topA), diffIDOf(t, topB)
	inRange := filepath.Join(root, "shifted", "16777216-65536")
	shiftedBase := mkdir(filepath.Join(inRange, baseHex))
	shiftedOld := mkdir(filepath.Join(inRange, topBHex))        // an image the range's holder no longer uses
	shiftedTmp := mkdir(filepath.Join(inRange, baseHex+".tmp")) // an interrupted copy
	freed := filepath.Join(root, "shifted", "16842752-65536")   // a range nobody holds
	mkdir(filepath.Join(freed, baseHex))
	leftover := mkdir(filepath.Join(root, "tmp", "layer-0123"))
	halfBlob := filepath.Join(root, "blobs", "sha256", "."+topBHex+".tmp-1")
	if err := os.WriteFile(halfBlob, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}

	keep := Keep{
		Manifests: map[string]bool{a.Digest: true},
		Shifted:   map[string]map[string]bool{filepath.Base(inRange): {baseHex: true}},
	}
	var discarded []string
	discard := func(p string) error {
		discarded = append(discarded, p)
		return os.RemoveAll(p)
	}

	// Everything is newer than a cutoff before the test began: work in
	// progress, as far as the collector can tell. Nothing goes.
	if err := s.CollectGarbage(ctx, keep, start.Add(-time.Minute), discard); err != nil {
		t.Fatal(err)
	}
	if len(discarded) != 0 {
		t.Fatalf("discarded items newer than the cutoff: %v", discarded)
	}

	if err := s.CollectGarbage(ctx, keep, time.Now().Add(time.Hour), discard); err != nil {
		t.Fatal(err)
	}
	bDigest, _ := v1.NewHash(b.Digest)
	want := []string{
		s.blobPath(bDigest), s.blobPath(cfgB), halfBlob,
		filepath.Join(root, "layers", "sha256", topBHex),
		shiftedOld, shiftedTmp, filepath.Join(freed, baseHex),
		leftover,
	}
	slices.Sort(want)
	slices.Sort(discarded)
	if !slices.Equal(discarded, want) {
		t.Errorf("discarded\n%v\nwant\n%v", discarded, want)
	}
	if exists(freed) {
		t.Error("the directory of a range nobody holds is still there")
	}
	for _, p := range []string{shiftedBase, filepath.Join(root, "layers", "sha256", baseHex), filepath.Join(root, "layers", "sha256", topAHex)} {
		if !exists(p) {
			t.Errorf("%s in use but gone", p)
		}
	}
	// The image in use is whole, also for a new store on the same root;
	// the other is gone from the index.
	s2, err := NewStore(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []*Store{s, s2} {
		if got, err := st.Get(ctx, "cove-build/a:latest"); err != nil || !slices.Equal(got.Layers, a.Layers) {
			t.Errorf("image in use after gc: %+v, %v", got, err)
		}
		if _, err := st.Get(ctx, "cove-build/b:latest"); !errors.Is(err, ErrNotFound) {
			t.Errorf("collected image: err %v, want ErrNotFound", err)
		}
	}
	idx, err := s.readIndex()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := idx["index.docker.io/cove-build/b:latest"]; ok || len(idx) != 1 {
		t.Errorf("index after gc: %v", idx)
	}
	// What was collected comes back on demand.
	if again, err := s.Import(ctx, "cove-build/b:latest", imgB); err != nil || !slices.Equal(again.Layers, b.Layers) {
		t.Fatalf("import after gc: %+v, %v", again, err)
	}
	if !exists(filepath.Join(root, "layers", "sha256", topBHex, "b")) {
		t.Error("layer not unpacked again")
	}
}

// TestCollectGarbageKeepsLayersByName: a layer named in Keep.Layers stays
// even when no kept manifest lists it (an environment recorded the layer
// directory itself).
func TestCollectGarbageKeepsLayersByName(t *testing.T) {
	requireRoot(t)
	s, root := newTestStore(t)
	ctx := ctxT(t)
	l := layer(t, entry{name: "x/", typ: tar.TypeDir})
	img, err := s.Import(ctx, "cove-build/x:latest", buildImage(t, v1.Config{}, l))
	if err != nil {
		t.Fatal(err)
	}
	hex := diffIDOf(t, l)
	if err := s.CollectGarbage(ctx, Keep{Layers: map[string]bool{hex: true}}, time.Now().Add(time.Hour), os.RemoveAll); err != nil {
		t.Fatal(err)
	}
	if !exists(img.Layers[0]) || !exists(filepath.Join(root, "layers", "sha256", hex)) {
		t.Error("layer in use was collected")
	}
}
