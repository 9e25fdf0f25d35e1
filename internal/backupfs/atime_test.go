package backupfs

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// atime returns path's access time.
func atime(t *testing.T, path string) time.Time {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(path, &st))
	return time.Unix(st.Atim.Unix())
}

// TestBackupLeavesAccessTimes: a backup reads the environment's files
// without updating their access times (O_NOATIME), as a read would under
// relatime when the file changed since last read.
func TestBackupLeavesAccessTimes(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	old, changed := time.Unix(1e9, 0), time.Unix(1.5e9, 0)
	uid, gid := int(mapA.HostUID), int(mapA.HostGID)
	for _, name := range []string{"read", "backed-up"} {
		p := filepath.Join(src, name)
		writeFile(t, p, randomBytes(1, 10000), 0o644, uid, gid)
		must(t, os.Chtimes(p, old, changed)) // read before it changed: relatime updates the next read
	}
	// The control: a plain read updates the access time here.
	if _, err := os.ReadFile(filepath.Join(src, "read")); err != nil {
		t.Fatal(err)
	}
	if atime(t, filepath.Join(src, "read")).Equal(old) {
		t.Skip("this file system does not update access times on read (noatime): nothing to check")
	}
	must(t, os.Chtimes(filepath.Join(src, "read"), old, changed))
	backup(t, repo, "b", "", mapA, Source{Name: "ws", Dir: src})
	for _, name := range []string{"read", "backed-up"} {
		if got := atime(t, filepath.Join(src, name)); !got.Equal(old) {
			t.Errorf("%s: access time %v after the backup, want %v as before", name, got, old)
		}
	}
}
