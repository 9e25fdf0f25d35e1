package runner

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/testutil"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"golang.org/x/sys/unix"
)

// gcFixture is a runner data dir with environments on disk, the images
// and features they use, and garbage.
type gcFixture struct {
	r     *Runner
	dir   string
	used  []string // paths that must survive every round
	trash []string // paths a round past the grace must remove
}

const gcLayerBytes = 4096 // bytes of random content per test layer

func newGCFixture(t *testing.T) *gcFixture {
	t.Helper()
	testutil.RequireRoot(t, "unpacking image layers keeps their owners")
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := image.NewStore(filepath.Join(dir, "images"), log)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "envs"), 0o711); err != nil {
		t.Fatal(err)
	}
	f := &gcFixture{r: &Runner{cfg: Config{DataDir: dir}, log: log, images: hostImages{store}, gc: &gcLock{}}, dir: dir}
	ctx := context.Background()
	imp := func(name string) *image.Image {
		t.Helper()
		ri, err := random.Image(gcLayerBytes, 2)
		if err != nil {
			t.Fatal(err)
		}
		img, err := store.Import(ctx, name, ri)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	mkdir := func(rel string) string {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "content"), make([]byte, gcLayerBytes), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rangeA := idmap.Range{HostID: 1 << 24, Size: 65536}
	rangeB := idmap.Range{HostID: 1<<24 + 65536, Size: 65536}
	freeRange := idmap.Range{HostID: 1<<24 + 2*65536, Size: 65536}

	// Environment a: an image plus a cached features layer (rebuilt from
	// the cache), with chowned copies of both in its range.
	imgA := imp("cove-build/a:latest")
	keyA := "sha256:" + strings.Repeat("a", 64)
	featA := mkdir("images/features/" + keyA)
	stA := envState{Header: envdir.Header{ID: "a", IDMap: rangeA}, Image: envconfig.Resolved{Digest: imgA.Digest, Layers: append(slices.Clone(imgA.Layers), featA),
		DC: &envconfig.DevcontainerState{FeaturesKey: keyA}}}
	f.used = append(f.used, imgA.Layers...)
	f.used = append(f.used, featA,
		mkdir(filepath.Join("images/shifted", rangeDirName(rangeA), filepath.Base(imgA.Layers[0]))),
		mkdir(filepath.Join("images/shifted", rangeDirName(rangeA), keyA)))

	// Environment b: Docker Compose, a sibling service with an image of
	// its own, and features installed in its container (the layer is
	// named by its key only).
	imgB, imgSvc := imp("cove-build/b:latest"), imp("cove-build/svc:latest")
	keyB := "sha256:" + strings.Repeat("b", 64)
	featB := mkdir("images/features/" + keyB)
	stB := envState{Header: envdir.Header{ID: "b", IDMap: rangeB}, Image: envconfig.Resolved{Digest: imgB.Digest, Layers: imgB.Layers, DC: &envconfig.DevcontainerState{FeaturesKey: keyB},
		Compose: &envconfig.ComposeState{Services: []envconfig.ServiceState{{Name: "db", ImageDigest: imgSvc.Digest, Layers: imgSvc.Layers}}}}}
	f.used = append(f.used, featB)
	f.used = append(f.used, imgB.Layers...)
	f.used = append(f.used, imgSvc.Layers...)

	for _, st := range []envState{stA, stB} {
		lay := f.r.layout(st.ID)
		if err := os.MkdirAll(lay.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := saveState(lay.State(), &st); err != nil {
			t.Fatal(err)
		}
	}
	// An environment directory whose creation stopped before its state
	// was written uses nothing.
	if err := os.MkdirAll(filepath.Join(f.r.layout("half").Dir, "etc"), 0o711); err != nil {
		t.Fatal(err)
	}

	// Garbage: an image nobody uses, the features layer of a deleted
	// environment, copies in a range nobody holds and of a layer range A
	// no longer uses, the feature download cache, and crash leftovers.
	imgOld := imp("cove-build/old:latest")
	f.trash = append(f.trash, imgOld.Layers...)
	f.trash = append(f.trash,
		mkdir("images/features/sha256:"+strings.Repeat("c", 64)),
		mkdir("images/features/"+keyB+".tmp-123"),
		mkdir(filepath.Join("images/shifted", rangeDirName(rangeA), filepath.Base(imgOld.Layers[0]))),
		mkdir(filepath.Join("images/shifted", rangeDirName(freeRange), filepath.Base(imgA.Layers[0]))),
		mkdir("features/sha256/"+strings.Repeat("d", 64)),
		mkdir("features/tmp/feature-1"),
		mkdir("images/tmp/layer-1"),
	)
	return f
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func (f *gcFixture) checkUsed(t *testing.T) {
	t.Helper()
	for _, p := range f.used {
		if !exists(p) {
			t.Errorf("%s is in use but was removed", p)
		}
	}
	ctx := context.Background()
	for _, name := range []string{"cove-build/a:latest", "cove-build/b:latest", "cove-build/svc:latest"} {
		if _, err := f.r.images.(hostImages).Get(ctx, name); err != nil {
			t.Errorf("image %s in use: %v", name, err)
		}
	}
}

// TestGCKeepsWhatEnvironmentsUse is R1 of the 2026-12 review: a round
// removes images, layers, chowned copies, features layers, the feature
// cache and leftovers that no environment's state names, and keeps
// everything any environment (plain or Compose) names.
func TestGCKeepsWhatEnvironmentsUse(t *testing.T) {
	f := newGCFixture(t)
	ctx := context.Background()
	removed, err := f.r.janitor().collectGarbage(ctx, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	f.checkUsed(t)
	for _, p := range f.trash {
		if exists(p) {
			t.Errorf("garbage %s survived", p)
		}
	}
	if exists(filepath.Join(f.dir, "images/shifted", rangeDirName(idmap.Range{HostID: 1<<24 + 2*65536, Size: 65536}))) {
		t.Error("the directory of a range nobody holds survived")
	}
	if _, err := f.r.images.(hostImages).Get(ctx, "cove-build/old:latest"); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("collected image: %v, want not found", err)
	}
	// Each removed item is reported with its size.
	got := map[string]int64{}
	for _, it := range removed {
		got[it.path] = it.bytes
	}
	for _, p := range f.trash {
		if n, ok := got[p]; !ok || n < gcLayerBytes {
			t.Errorf("removal of %s reported as %d bytes (reported: %v)", p, n, ok)
		}
	}
	// Nothing is left in the trash.
	for _, d := range []string{"images/tmp", "features/tmp"} {
		if ents, _ := os.ReadDir(filepath.Join(f.dir, d)); len(ents) != 0 {
			t.Errorf("%s not emptied: %v", d, ents)
		}
	}
}

// TestGCGrace: nothing changed within the grace period goes, used or not
// (a pull or feature install whose state is not saved yet).
func TestGCGrace(t *testing.T) {
	f := newGCFixture(t)
	before := time.Now().Add(-gcGrace)
	removed, err := f.r.janitor().collectGarbage(context.Background(), before)
	if err != nil || len(removed) != 0 {
		t.Fatalf("removed %v (%v) within the grace period", removed, err)
	}
	f.checkUsed(t)
	for _, p := range f.trash {
		if !exists(p) {
			t.Errorf("%s removed within the grace period", p)
		}
	}
}

// TestGCUnreadableStateStopsRound: an environment whose state cannot be
// read may use anything, so the round removes nothing; so does a
// container or root file system without a state file.
func TestGCUnreadableStateStopsRound(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(t *testing.T, lay envdir.Layout)
	}{
		{"truncated state", func(t *testing.T, lay envdir.Layout) {
			if err := os.WriteFile(lay.State(), []byte(`{"id":"c","lay`), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"container without state", func(t *testing.T, lay envdir.Layout) {
			bundle := filepath.Join(lay.Runtime(), "bundle")
			if err := os.MkdirAll(bundle, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newGCFixture(t)
			lay := f.r.layout("c")
			if err := os.MkdirAll(lay.Dir, 0o700); err != nil {
				t.Fatal(err)
			}
			tc.make(t, lay)
			removed, err := f.r.janitor().collectGarbage(context.Background(), time.Now().Add(time.Hour))
			if err == nil || !strings.Contains(err.Error(), "environment c") {
				t.Fatalf("round went ahead: removed %v, err %v", removed, err)
			}
			if len(removed) != 0 {
				t.Fatalf("removed %v", removed)
			}
			f.checkUsed(t)
			for _, p := range f.trash {
				if !exists(p) {
					t.Errorf("%s removed in a round that should have stopped", p)
				}
			}
		})
	}
}

// TestGCWaitsForWork: while a pull, mount or snapshot holds the store, a
// round does nothing and says so.
func TestGCWaitsForWork(t *testing.T) {
	f := newGCFixture(t)
	release := f.r.gc.use()
	removed, err := f.r.janitor().collectGarbage(context.Background(), time.Now().Add(time.Hour))
	release()
	if !errors.Is(err, errGCBusy) || len(removed) != 0 {
		t.Fatalf("round during work: removed %v, err %v", removed, err)
	}
	for _, p := range append(f.used, f.trash...) {
		if !exists(p) {
			t.Errorf("%s removed during work", p)
		}
	}
	if _, err := f.r.janitor().collectGarbage(context.Background(), time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("round after the work: %v", err)
	}
}

// TestDiskUsageRefusesMounts: a tree with a mount point below it is never
// removed (RemoveAll would descend into the mounted file system).
func TestDiskUsageRefusesMounts(t *testing.T) {
	testutil.RequireRoot(t, "mount")
	dir := t.TempDir()
	mp := filepath.Join(dir, "item", "mnt")
	if err := os.MkdirAll(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := mountTmpfs(mp); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unmountTmpfs(mp) })
	tr := &trash{parent: filepath.Join(dir, "trash")}
	if err := tr.add(filepath.Join(dir, "item")); err != nil {
		t.Fatal(err)
	}
	// The mount moved with its parent; unmount it from there at the end.
	moved := filepath.Join(tr.items[0].at, "mnt")
	t.Cleanup(func() { _ = unmountTmpfs(moved) })
	if err := os.WriteFile(filepath.Join(moved, "victim"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.empty(); err == nil || !strings.Contains(err.Error(), "mount point") {
		t.Fatalf("emptied a trash holding a mount point: %v", err)
	}
	if !exists(filepath.Join(moved, "victim")) {
		t.Fatal("a file on the mounted file system was removed")
	}
}

func mountTmpfs(p string) error { return unix.Mount("tmpfs", p, "tmpfs", 0, "size=1m") }

func unmountTmpfs(p string) error { return unix.Unmount(p, unix.MNT_DETACH) }
