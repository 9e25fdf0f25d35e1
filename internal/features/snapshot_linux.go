package features

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/covedev/cove/internal/confine"
	"golang.org/x/sys/unix"
)

// overflowID is what ids outside the environment's range become.
const overflowID = 65534

// Overlay xattrs that describe the upper directory's relation to the lower
// layers it was mounted over (and the metadata-only copy-up, which would
// leave a file without data): meaningless or wrong in a new layer.
var droppedXattrs = map[string]bool{
	"overlay.origin": true, "overlay.impure": true, "overlay.nlink": true,
	"overlay.upper": true, "overlay.uuid": true, "overlay.protattr": true,
}

// SnapshotLayer copies the overlay upper directory upperDir into a new layer
// directory layerDir, shifting every uid and gid down by shift (the host id
// the environment's root maps to) so the layer holds container ids, like an
// unpacked image layer. Modes, times, xattrs, symlinks, hard links, overlay
// whiteouts (0:0 character devices) and opaque directories
// (trusted.overlay.opaque) are kept. exclude lists container paths ("/tmp",
// "/etc/hosts") skipped with everything beneath them.
//
// The upper directory belongs to the environment, which may still be
// running: it is read through descriptors (confine.CopyTree), so a
// directory swapped for a symlink halfway is copied as the link, never
// followed to a host file.
//
// The copy is made in a temporary sibling of layerDir and renamed into place:
// layerDir exists only complete. If layerDir already exists, SnapshotLayer
// leaves it as is and returns nil.
func SnapshotLayer(upperDir, layerDir string, shift uint32, exclude []string) error {
	if _, err := os.Lstat(layerDir); err == nil {
		return nil
	}
	skip := map[string]bool{}
	for _, e := range exclude {
		skip[filepath.Clean("/"+e)] = true
	}
	tmp, err := os.MkdirTemp(filepath.Dir(layerDir), filepath.Base(layerDir)+".tmp-")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	upper, err := confine.OpenDir(upperDir)
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("snapshot: %w", err)
	}
	defer upper.Close()
	if err := confine.CopyTree(context.Background(), upper, tmp, snapshotOptions(shift, skip)); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("snapshot %s: %w", upperDir, err)
	}
	if err := syncTree(tmp); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("snapshot sync: %w", err)
	}
	if err := os.Rename(tmp, layerDir); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("snapshot commit: %w", err)
	}
	if d, err := os.Open(filepath.Dir(layerDir)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func unshift(id, shift uint32) uint32 {
	if id < shift {
		return overflowID
	}
	return id - shift
}

// snapshotOptions copies an upper directory into a layer: ids shifted down
// by shift, excluded container paths (keys of skip, like "/tmp") left out,
// overlay bookkeeping xattrs dropped and metadata-only copy-ups refused.
func snapshotOptions(shift uint32, skip map[string]bool) confine.CopyOptions {
	return confine.CopyOptions{
		MapID: func(id uint32) uint32 { return unshift(id, shift) },
		Exclude: func(rel string) bool {
			return skip[filepath.Clean("/"+rel)]
		},
		Xattr: func(path, name string) (bool, error) {
			short := strings.TrimPrefix(strings.TrimPrefix(name, "trusted."), "user.")
			if short == "overlay.metacopy" {
				return false, fmt.Errorf("%s is a metadata-only copy-up (overlay metacopy=on is not supported)", path)
			}
			return !droppedXattrs[short], nil
		},
	}
}

// syncTree flushes the file system holding dir.
func syncTree(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}
