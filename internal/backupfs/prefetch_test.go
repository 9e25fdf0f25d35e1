package backupfs

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/covedev/cove/internal/backuprepo"
)

// manifestEntries reads backup name's entries.
func manifestEntries(t *testing.T, repo *backuprepo.Repo, name string) []backuprepo.Entry {
	t.Helper()
	m, err := repo.OpenManifest(context.Background(), name)
	must(t, err)
	var out []backuprepo.Entry
	for {
		e, err := m.Next()
		if err == io.EOF {
			return out
		}
		must(t, err)
		out = append(out, *e)
	}
}

// The metadata prefetch only warms caches: an incremental backup with it
// and one without, from the same previous backup of the same tree, hold
// the same entries and report the same.
func TestIncrementalSameWithPrefetch(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	uid, gid := int(mapA.HostUID), int(mapA.HostGID)
	for i := range 300 {
		p := filepath.Join(src, fmt.Sprintf("d%d/e%d/f%d", i%7, i%3, i))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		writeFile(t, p, randomBytes(uint64(i+1), 100+i*37), 0o644, uid, gid)
	}
	backup(t, repo, "full", "", mapA, Source{Name: "ws", Dir: src})
	for i := range 300 {
		if i%10 == 0 {
			writeFile(t, filepath.Join(src, fmt.Sprintf("d%d/e%d/f%d", i%7, i%3, i)), randomBytes(uint64(i+1000), 200), 0o644, uid, gid)
		}
	}
	must(t, os.Remove(filepath.Join(src, "d1/e1/f1")))

	orig := prefetchWorkers
	t.Cleanup(func() { prefetchWorkers = orig })
	var res [2]BackupResult
	for i, workers := range []int{0, 4} {
		prefetchWorkers = workers
		res[i] = backup(t, repo, fmt.Sprintf("incr%d", workers), "full", mapA, Source{Name: "ws", Dir: src})
		res[i].Summary = backuprepo.Summary{} // durations and what the first stored differ
	}
	if !reflect.DeepEqual(res[0], res[1]) {
		t.Errorf("results differ:\nwithout %+v\nwith    %+v", res[0], res[1])
	}
	without, with := manifestEntries(t, repo, "incr0"), manifestEntries(t, repo, "incr4")
	if !reflect.DeepEqual(without, with) {
		t.Errorf("manifests differ: %d entries without the prefetch, %d with", len(without), len(with))
	}
	if res[1].Read != 30 {
		t.Errorf("%d files read, want the 30 changed", res[1].Read)
	}
}
