package confine

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"golang.org/x/sys/unix"
)

func TestFSReadsInRoot(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "etc/passwd"), "dev:x:1000:1000::/home/dev:/bin/sh\n")
	write(t, filepath.Join(root, "usr/lib/group"), "dev:x:1000:\n")
	// An absolute link inside the image resolves inside the image.
	if err := os.Symlink("/usr/lib/group", filepath.Join(root, "etc/group")); err != nil {
		t.Fatal(err)
	}
	fsys := openDir(t, root).FS(InRoot)
	for name, want := range map[string]string{"etc/passwd": "dev:x:1000:1000::/home/dev:/bin/sh\n", "etc/group": "dev:x:1000:\n"} {
		b, err := fs.ReadFile(fsys, name)
		if err != nil || string(b) != want {
			t.Errorf("ReadFile(%s) = %q, %v; want %q", name, b, err, want)
		}
	}
	// fs.FS conformance, on a tree without links (a directory listing
	// shows a link as a link, Open follows it).
	plain := t.TempDir()
	write(t, filepath.Join(plain, "etc/passwd"), "root:x:0:0::/root:/bin/sh\n")
	write(t, filepath.Join(plain, "etc/group"), "root:x:0:\n")
	if err := fstest.TestFS(openDir(t, plain).FS(InRoot), "etc/passwd", "etc/group"); err != nil {
		t.Error(err)
	}
}

// An image's /etc/passwd that links to a host file (absolute or through
// "..") is resolved inside the image: the host file is never read.
func TestFSLinksNeverLeave(t *testing.T) {
	secret := filepath.Join(secretDir(t), "ssh_user_ca")
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(filepath.Join(root, "etc"), secret)
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{secret, rel} {
		link := filepath.Join(root, "etc/passwd")
		os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		b, err := fs.ReadFile(openDir(t, root).FS(InRoot), "etc/passwd")
		if strings.Contains(string(b), "HOST-SECRET") {
			t.Fatalf("link to %s: read the host's file through the image", target)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("link to %s: err = %v, want not exist (the target inside the image)", target, err)
		}
		if err != nil && strings.Contains(err.Error(), root) {
			t.Errorf("error names the host path: %v", err)
		}
	}
}

// A FIFO planted where a file is expected is described, never opened for
// reading (which could block the runner).
func TestFSDoesNotReadFIFOs(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(root, "etc/passwd"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := openDir(t, root).FS(InRoot).Open("etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Mode()&fs.ModeNamedPipe == 0 || fi.Mode().IsRegular() {
		t.Fatalf("Stat of a FIFO = %v, %v; want a named pipe", fi.Mode(), err)
	}
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, ErrNotRegular) {
		t.Errorf("Read of a FIFO = %v, want %v", err, ErrNotRegular)
	}
	if _, err := io.ReadAll(f); err == nil {
		t.Error("ReadAll of a FIFO succeeded")
	}
}

func TestFSRefusesInvalidNames(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "etc/passwd"), "x")
	fsys := openDir(t, root).FS(InRoot)
	for _, name := range []string{"/etc/passwd", "../etc/passwd", "etc/../etc/passwd", "etc/passwd/", ""} {
		if _, err := fsys.Open(name); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want %v", name, err, fs.ErrInvalid)
		}
	}
}
