package mountinfo

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

var notDir error = unix.ENOTDIR

// statxMountRoot asks the kernel whether path is a mount's root; known is
// false when the kernel cannot tell (before Linux 5.8).
func statxMountRoot(path string) (mounted, known bool, err error) {
	var stx unix.Statx_t
	for {
		err = unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, unix.STATX_TYPE, &stx)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		return false, true, nil
	case errors.Is(err, unix.ENOSYS):
		return false, false, nil
	case err != nil:
		return false, false, fmt.Errorf("statx %s: %w", path, err)
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return false, false, nil
	}
	return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, true, nil
}
