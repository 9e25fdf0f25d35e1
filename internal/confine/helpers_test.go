package confine

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/covedev/cove/internal/testutil"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "chown, mknod, set-id bits, mounts")
}

func lstat(t testing.TB, p string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func openDir(t *testing.T, p string) *Dir {
	t.Helper()
	d, err := OpenDir(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// secretDir is a directory outside the tree under test that an attacker
// would like the runner to read or modify: the files in it must never show
// up in a copy, and its mode must never change.
func secretDir(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "secret")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(d, "ssh_user_ca"), "HOST-SECRET-KEY")
	return d
}
