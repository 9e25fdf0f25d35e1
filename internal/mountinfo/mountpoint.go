package mountinfo

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// IsMountPoint reports whether path is the root of a mount in this
// process's mount namespace: an overlay, a tmpfs, and also a bind or
// idmapped mount of the same file system as its parent (which a device
// comparison misses). A missing path is not a mount point, and neither is
// a symlink (path's last component is not followed, as umount's
// UMOUNT_NOFOLLOW does not).
//
// It is one statx call (STATX_ATTR_MOUNT_ROOT, Linux 5.8+), cheap enough
// for a control loop; older kernels get a lookup in the mount table.
func IsMountPoint(path string) (bool, error) {
	ok, known, err := statxMountRoot(path)
	if err != nil || known {
		return ok, err
	}
	return inTable(path)
}

// inTable answers IsMountPoint from the mount table.
func inTable(path string) (bool, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false, err
	}
	fi, err := os.Lstat(abs)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, notDir) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return false, nil
	}
	// The table names mount points by their canonical path.
	if abs != "/" {
		dir, err := filepath.EvalSymlinks(filepath.Dir(abs))
		if err != nil {
			return false, err
		}
		abs = filepath.Join(dir, filepath.Base(abs))
	}
	mps, err := Points()
	if err != nil {
		return false, err
	}
	return mps[abs], nil
}
