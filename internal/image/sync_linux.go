package image

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncDir flushes the file system holding dir, so that a layer renamed into
// place is never found half-written after a crash.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
