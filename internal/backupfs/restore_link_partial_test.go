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

// TestHardLinkToAFileNotRestoredRefused performs REV-S8-5 against
// files written under their own names: a hostile manifest (a holder of
// the key) hard-links t/z to t/x, whose chunk — corrupt in the bucket —
// may still be in flight when the walk reaches t/z. Linked then, t/x's
// partial content would stay under t/z once t/x is removed as not
// restored. The walk must wait for t/x and find it gone. A link to a name
// the restore once used for temporaries (t/.cove-restore-1) is a link to
// nothing restored. Whatever the scheduling, no partial file is left
// under any name and the files after the links restore.
func TestHardLinkToAFileNotRestoredRefused(t *testing.T) {
	requireRoot(t)
	plain, blobs := newRepoUnpacked(t)
	manifest(t, plain, "evil",
		dir("."),
		dir("t"),
		file("t/x", "the file whose chunk is corrupt"),
		hardlink("t/y", "t/.cove-restore-1"),
		hardlink("t/z", "t/x"),
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

	for _, workers := range []int{1, 4} {
		target := emptyDir(t, "t")
		res, err := Restore(context.Background(), plain, "evil", []Source{{Name: "t", Dir: target}}, RestoreOptions{Map: mapB, Workers: workers, Log: testLog(t)})
		must(t, err)
		for _, name := range []string{"x", "y", "z"} {
			if _, err := os.Lstat(filepath.Join(target, name)); !errors.Is(err, os.ErrNotExist) {
				got, _ := os.ReadFile(filepath.Join(target, name))
				t.Errorf("%d workers: t/%s exists (%v): %q — partial content of t/x, which was not restored, kept under a name", workers, name, err, got)
			}
		}
		if got := failedPaths(res); !slices.Equal(got, []string{"t/x", "t/y", "t/z"}) {
			t.Errorf("%d workers: failed %q, want t/x, t/y and t/z", workers, got)
		}
		onlyWholeFiles(t, target, map[string][]byte{"zz": []byte("a file after the link")})
	}
}
