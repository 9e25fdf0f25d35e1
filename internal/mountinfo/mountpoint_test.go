package mountinfo

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/covedev/cove/internal/testutil"
	"golang.org/x/sys/unix"
)

// both checks: the kernel's answer and the mount table's (older kernels).
var checks = map[string]func(string) (bool, error){"IsMountPoint": IsMountPoint, "inTable": inTable}

func TestIsMountPointWithoutMounts(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("/", link); err != nil {
		t.Fatal(err)
	}
	for name, check := range checks {
		for p, want := range map[string]bool{
			"/proc":                        true,
			dir:                            false,
			file:                           false,
			filepath.Join(dir, "missing"):  false,
			filepath.Join(file, "beneath"): false, // ENOTDIR
			link:                           false, // a link to "/" is not followed
		} {
			got, err := check(p)
			if err != nil || got != want {
				t.Errorf("%s(%s) = %v, %v; want %v", name, p, got, err, want)
			}
		}
	}
}

// A bind mount of a directory of the same file system is a mount point:
// the device comparison the runner used before said it was not.
func TestIsMountPointSeesSameDeviceBindMounts(t *testing.T) {
	testutil.RequireRoot(t, "mounts")
	dir := t.TempDir()
	src, target := filepath.Join(dir, "src"), filepath.Join(dir, "with space")
	for _, d := range []string{src, target} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	var a, b unix.Stat_t
	if err := unix.Stat(src, &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	if err := unix.Stat(target, &b); err != nil || a.Dev != b.Dev {
		t.Fatalf("bind mount changed the device (%d, %d, %v): this test needs the same device", a.Dev, b.Dev, err)
	}
	for name, check := range checks {
		if ok, err := check(target); err != nil || !ok {
			t.Errorf("%s(bind mount) = %v, %v; want true", name, ok, err)
		}
		if ok, err := check(src); err != nil || ok {
			t.Errorf("%s(bind source) = %v, %v; want false", name, ok, err)
		}
	}
	if err := unix.Unmount(target, 0); err != nil {
		t.Fatal(err)
	}
	for name, check := range checks {
		if ok, err := check(target); err != nil || ok {
			t.Errorf("%s(after unmount) = %v, %v; want false", name, ok, err)
		}
	}
}
