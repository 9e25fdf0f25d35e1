package passwd_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/passwd"
	"github.com/covedev/cove/internal/usererr"
	"golang.org/x/sys/unix"
)

// The runner resolves an image's user over the image's root file system
// opened with confine (InRoot). An image whose /etc/passwd and /etc/group
// link to files outside it gets the files inside it, never the host's: the
// user the host's files describe is not found, and nothing of them is read.
func TestLookupInImageNeverReadsHostFiles(t *testing.T) {
	host := t.TempDir()
	hostPasswd := filepath.Join(host, "passwd")
	hostGroup := filepath.Join(host, "group")
	writeFile(t, hostPasswd, "hostonly:x:4242:4242::/root:/bin/sh\n")
	writeFile(t, hostGroup, "hostgroup:x:4343:hostonly\n")

	rootfs := t.TempDir()
	if err := os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Enough ".." to reach the host's "/" from the image's /etc, then
	// down to the host's file; and an absolute link.
	up := strings.Repeat("../", strings.Count(rootfs, "/")+1)
	must(t, os.Symlink(up+hostPasswd[1:], filepath.Join(rootfs, "etc/passwd")))
	must(t, os.Symlink(hostGroup, filepath.Join(rootfs, "etc/group")))

	root, err := confine.OpenDir(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	fsys := root.FS(confine.InRoot)

	if u, err := passwd.Lookup(fsys, "hostonly"); err == nil {
		t.Fatalf("resolved the host's user through a link out of the image: %+v", u)
	} else if _, ok := usererr.Message(err); !ok {
		t.Errorf("unknown user: %v is not a user error", err)
	}
	if u, err := passwd.Lookup(fsys, "1000:hostgroup"); err == nil {
		t.Fatalf("resolved the host's group through a link out of the image: %+v", u)
	}
	// The same links pointing inside the image work.
	writeFile(t, filepath.Join(rootfs, hostPasswd), "dev:x:1000:1000::/home/dev:/bin/sh\n")
	writeFile(t, filepath.Join(rootfs, hostGroup), "docker:x:999:dev\n")
	u, err := passwd.Lookup(fsys, "dev")
	if err != nil || u.UID != 1000 || u.GID != 1000 || len(u.Groups) != 2 || u.Groups[1] != 999 {
		t.Errorf("Lookup(dev) through links inside the image = %+v, %v", u, err)
	}
}

// A FIFO planted at the image's /etc/passwd is refused by name, without
// blocking the runner on it.
func TestLookupInImageRefusesFIFO(t *testing.T) {
	rootfs := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755))
	must(t, unix.Mkfifo(filepath.Join(rootfs, "etc/passwd"), 0o644))
	root, err := confine.OpenDir(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	_, err = passwd.Lookup(root.FS(confine.InRoot), "dev")
	if msg, ok := usererr.Message(err); !ok || msg != "/etc/passwd is not a regular file" {
		t.Errorf("FIFO at /etc/passwd: %v", err)
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(s), 0o644))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
