package backupfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkUnchanged measures an incremental backup of 10,000 unchanged
// files in 100 directories: the walk and the comparison, no file read.
func BenchmarkUnchanged(b *testing.B) {
	requireRoot(b)
	repo, _ := newRepo(b)
	src := emptyDir(b, "src")
	for d := range 100 {
		dir := filepath.Join(src, fmt.Sprintf("d%03d", d))
		must(b, os.Mkdir(dir, 0o755))
		for f := range 100 {
			must(b, os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", f)), []byte(fmt.Sprint(d, f)), 0o644))
		}
	}
	backup(b, repo, "full", "", mapA, Source{Name: "ws", Dir: src})
	b.ResetTimer()
	for i := range b.N {
		res := backup(b, repo, fmt.Sprint("inc", i), "full", mapA, Source{Name: "ws", Dir: src})
		if res.Changed || res.Read != 0 {
			b.Fatalf("changed %v, read %d", res.Changed, res.Read)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10000, "ns/file")
}

// BenchmarkFullBackupAndRestore measures a full backup and a restore of
// 64 MiB of incompressible content in 16 files.
func BenchmarkFullBackupAndRestore(b *testing.B) {
	requireRoot(b)
	repo, _ := newRepo(b)
	src := emptyDir(b, "src")
	for f := range 16 {
		must(b, os.WriteFile(filepath.Join(src, fmt.Sprint("f", f)), randomBytes(uint64(f+1)*uint64(b.N+1), 4<<20), 0o644))
	}
	b.SetBytes(64 << 20)
	b.ResetTimer()
	for i := range b.N {
		backup(b, repo, fmt.Sprint("b", i), "", mapA, Source{Name: "ws", Dir: src})
		if _, err := Restore(context.Background(), repo, fmt.Sprint("b", i), []Source{{Name: "ws", Dir: emptyDir(b, "t")}}, RestoreOptions{Map: mapB}); err != nil {
			b.Fatal(err)
		}
	}
}
