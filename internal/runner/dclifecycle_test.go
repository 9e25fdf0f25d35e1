package runner

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/covedev/cove/internal/guest"
)

// TestWriteRemoteEnv: the remoteEnv file replaces an earlier one and is
// readable only by its owner (root inside the environment), whatever the
// mode of what it replaces.
func TestWriteRemoteEnv(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, guest.RemoteEnvName)
	if err := os.WriteFile(p, []byte(`["OLD=1"]`), 0o644); err != nil {
		t.Fatal(err)
	}
	owner := uint32(os.Getuid())
	if err := writeRemoteEnv(dir, []byte(`["TOKEN=s3cret"]`), owner); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != `["TOKEN=s3cret"]` {
		t.Fatalf("content %q, %v", b, err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 || fi.Sys().(*syscall.Stat_t).Uid != owner {
		t.Errorf("mode %v uid %d, want 0600 and %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, owner)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Errorf("temporary files left: %q", left)
	}
}
