package mountinfo

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/covedev/cove/internal/testutil"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/x\134y`: `/x\y`, `/trail\04`: `/trail\04`} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnderSeesBindMounts(t *testing.T) {
	testutil.RequireRoot(t, "mounts")
	src, dir := t.TempDir(), t.TempDir()
	target := filepath.Join(dir, "with space")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if ms, err := Under(dir); err != nil || len(ms) != 0 {
		t.Fatalf("nothing mounted: %v %v", ms, err)
	}
	if err := syscall.Mount(src, target, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer syscall.Unmount(target, syscall.MNT_DETACH)
	if ms, err := Under(dir); err != nil || !slices.Equal(ms, []string{target}) {
		t.Fatalf("bind mount of the same file system: %v %v", ms, err)
	}
}
