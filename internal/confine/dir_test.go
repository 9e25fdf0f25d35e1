package confine

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestBeneathRefusesSymlinks(t *testing.T) {
	root := t.TempDir()
	secret := secretDir(t)
	write(t, filepath.Join(root, "repo/.devcontainer/devcontainer.json"), "{}")
	if err := os.Symlink(secret, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(".devcontainer", filepath.Join(root, "repo/inner")); err != nil {
		t.Fatal(err)
	}
	d := openDir(t, root)
	for _, rel := range []string{"link", "link/ssh_user_ca", "repo/inner/devcontainer.json", "../secret", "repo/../../secret"} {
		if _, err := d.ReadFile(rel, 1<<20, Beneath); err == nil {
			t.Errorf("Beneath read %q", rel)
		}
	}
	if _, err := d.ReadFile("link/ssh_user_ca", 1<<20, Beneath); !errors.Is(err, ErrEscape) {
		t.Errorf("escape error is not ErrEscape: %v", err)
	}
	b, err := d.ReadFile("/repo/.devcontainer/devcontainer.json", 1<<20, Beneath)
	if err != nil || string(b) != "{}" {
		t.Fatalf("plain path: %q, %v", b, err)
	}
}

func TestInRootClampsLinks(t *testing.T) {
	root := t.TempDir()
	secret := secretDir(t)
	write(t, filepath.Join(root, "etc/passwd"), "root:x:0:0::/root:/bin/sh\n")
	// A link to the host's secret resolves inside root, where it names
	// nothing; relative links climbing out stop at root.
	for name, target := range map[string]string{"abs": secret + "/ssh_user_ca", "up": "../../../../../../" + secret[1:] + "/ssh_user_ca", "pw": "/etc/passwd"} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	d := openDir(t, root)
	for _, rel := range []string{"abs", "up"} {
		if b, err := d.ReadFile(rel, 1<<20, InRoot); err == nil {
			t.Errorf("InRoot %s read %q", rel, b)
		}
	}
	if b, err := d.ReadFile("pw", 1<<20, InRoot); err != nil || !strings.HasPrefix(string(b), "root:") {
		t.Errorf("link inside root: %q, %v", b, err)
	}
}

func TestReadFileRefusesSpecialFiles(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	if err := unix.Mkfifo(filepath.Join(root, "fifo"), 0o666); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "big"), strings.Repeat("x", 100))
	d := openDir(t, root)
	// A FIFO would block a naive open forever; this returns at once.
	if _, err := d.ReadFile("fifo", 10, Beneath); err == nil {
		t.Error("FIFO read as a file")
	}
	if _, err := d.ReadFile("big", 10, Beneath); err == nil {
		t.Error("size limit not enforced")
	}
	if _, err := d.ReadFile(".", 10, Beneath); err == nil {
		t.Error("directory read as a file")
	}
}

func TestOpenDirRefusesFinalSymlink(t *testing.T) {
	root := t.TempDir()
	if err := os.Symlink("/", filepath.Join(root, "l")); err != nil {
		t.Fatal(err)
	}
	if d, err := OpenDir(filepath.Join(root, "l")); err == nil {
		d.Close()
		t.Fatal("OpenDir followed a final symlink")
	}
}

func TestRootReadsThroughFS(t *testing.T) {
	root := t.TempDir()
	secret := secretDir(t)
	write(t, filepath.Join(root, "a/f"), "ok")
	if err := os.Symlink(secret, filepath.Join(root, "out")); err != nil {
		t.Fatal(err)
	}
	r, err := openDir(t, root).Root()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if b, err := r.ReadFile("a/f"); err != nil || string(b) != "ok" {
		t.Fatalf("a/f: %q, %v", b, err)
	}
	if b, err := r.ReadFile("out/ssh_user_ca"); err == nil {
		t.Fatalf("os.Root followed a link out: %q", b)
	}
}
