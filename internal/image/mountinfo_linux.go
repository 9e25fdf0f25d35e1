package image

import (
	"errors"
	"io/fs"
	"path/filepath"

	"github.com/covedev/cove/internal/mountinfo"
)

// isMountPoint reports whether p (symlinks resolved) is a mount point in this
// process's mount namespace. A missing path is not.
func isMountPoint(p string) (bool, error) {
	real, err := filepath.EvalSymlinks(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	mps, err := mountinfo.Points()
	if err != nil {
		return false, err
	}
	return mps[real], nil
}
