package backupfs

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestHardLinkToATemporaryRefused performs REV-S8-5: a hostile manifest
// (a holder of the key) hard-links t/z to t/.cove-restore-1, the
// temporary name the restore writes t/x under, while t/x's chunk — corrupt
// in the bucket — is still being fetched. Linked, the temporary would stay
// under t/z once t/x is removed as not restored: a partial file the
// restore says it never leaves under a name. The store holds t/x's chunk
// until the walk has gone past t/z (t/zz's chunk is fetched), so t/x is in
// flight when t/z is restored, whatever the scheduling.
func TestHardLinkToATemporaryRefused(t *testing.T) {
	requireRoot(t)
	plain, blobs := newRepo(t)
	manifest(t, plain, "evil",
		dir("."),
		dir("t"),
		file("t/x", "the file whose chunk is corrupt"),
		hardlink("t/z", "t/.cove-restore-1"),
		file("t/zz", "a file after the link"),
	)
	m, err := plain.OpenManifest(context.Background(), "evil")
	must(t, err)
	key := map[string]string{}
	for {
		e, err := m.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		if len(e.Chunks) > 0 {
			id := e.Chunks[0].ID.String()
			key[e.Path] = "chunks/" + id[:2] + "/" + id
		}
	}
	corrupt := filepath.Join(blobs, filepath.FromSlash(key["t/x"]))
	data, err := os.ReadFile(corrupt)
	must(t, err)
	data[len(data)/2] ^= 1
	must(t, os.WriteFile(corrupt, data, 0o644))

	walkedPast := make(chan struct{})
	g := &gatedStore{gate: func(ctx context.Context, k string) error {
		switch k {
		case key["t/x"]:
			select {
			case <-walkedPast:
			case <-ctx.Done():
				return ctx.Err()
			}
		case key["t/zz"]:
			close(walkedPast)
		}
		return nil
	}}
	repo := gatedRepo(t, blobs, g)
	target := emptyDir(t, "t")
	res, err := Restore(context.Background(), repo, "evil", []Source{{Name: "t", Dir: target}}, RestoreOptions{Map: mapB, Workers: 4, Log: testLog(t)})
	must(t, err)
	if _, err := os.Lstat(filepath.Join(target, "z")); !errors.Is(err, os.ErrNotExist) {
		got, _ := os.ReadFile(filepath.Join(target, "z"))
		t.Fatalf("t/z exists (%v): %q — the temporary of t/x, which was not restored, kept under a name", err, got)
	}
	if _, err := os.Lstat(filepath.Join(target, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("t/x left under its name (%v)", err)
	}
	if got := failedPaths(res); !slices.Equal(got, []string{"t/x", "t/z"}) {
		t.Errorf("failed %q, want t/x and t/z", got)
	}
	if got, err := os.ReadFile(filepath.Join(target, "zz")); err != nil || string(got) != "a file after the link" {
		t.Errorf("t/zz: %q, %v", got, err)
	}
	noTemporaries(t, target)
}
