package diskquota

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/covedev/cove/internal/errdefs"
	"golang.org/x/sys/unix"
)

// TestFullNeighbourLosesNothing performs the attack of the 2026-12-03
// review (H1): on a data dir with room for two disks, environment A fills
// its own disk while B writes and fsyncs. With sparse images the host's
// file system ran out under B, whose fsync'ed file then read back as
// zeros; disks now own their blocks, so B's data is intact, and a third
// disk that would eat the runner's reserve is refused.
func TestFullNeighbourLosesNothing(t *testing.T) {
	needLoop(t)
	ctx := context.Background()
	base := t.TempDir()
	dataImg, dataDir := filepath.Join(base, "data.img"), filepath.Join(base, "data")
	t.Cleanup(func() { _ = Unmount(dataDir); _ = Detach(dataImg) })
	if err := Create(ctx, dataImg, 320<<20); err != nil {
		t.Fatal(err)
	}
	if err := Mount(dataImg, dataDir); err != nil {
		t.Fatal(err)
	}
	disk := func(name string) (string, string, error) {
		img, target := filepath.Join(dataDir, name+".img"), filepath.Join(dataDir, name)
		t.Cleanup(func() { _ = Unmount(target); _ = Detach(img) })
		if err := Create(ctx, img, 100<<20); err != nil {
			return img, target, err
		}
		return img, target, Mount(img, target)
	}
	_, a, err := disk("a")
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := disk("b")
	if err != nil {
		t.Fatal(err)
	}
	cImg, _, err := disk("c")
	if err == nil || errdefs.CategoryOf(err) != errdefs.CategoryResourceExhausted {
		t.Fatalf("a third disk past the runner's reserve: %v, want refused as resource exhausted", err)
	}
	if _, err := os.Lstat(cImg); !os.IsNotExist(err) {
		t.Errorf("refused disk's image left: %v", err)
	}

	// A fills its disk.
	fill := make([]byte, 1<<20)
	f, err := os.Create(filepath.Join(a, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if _, err := f.Write(fill); err != nil {
			break
		}
	}
	_ = f.Sync()
	f.Close()

	// B writes and fsyncs; its data survives a remount.
	want := make([]byte, 48<<20)
	if _, err := rand.Read(want); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(b, "victim")
	g, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Write(want); err != nil {
		t.Fatalf("neighbour's write: %v", err)
	}
	if err := g.Sync(); err != nil {
		t.Fatalf("neighbour's fsync: %v", err)
	}
	g.Close()
	if err := Unmount(b); err != nil {
		t.Fatal(err)
	}
	if err := Mount(filepath.Join(dataDir, "b.img"), b); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the neighbour's fsync'ed file changed after A filled its disk")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(b, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&unix.ST_RDONLY != 0 {
		t.Error("the neighbour's disk went read-only")
	}
}
