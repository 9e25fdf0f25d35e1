package confine

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Stage mounts d (a directory, with the mounts below it, or a file) at
// target, a path the caller trusts (in a root-owned directory), so that a
// runtime can bind-mount target into a container: the mount is made from
// d's descriptor (open_tree, move_mount), so whatever the environment does
// to the path d was reached by, target is what was checked. target is
// created (a directory or an empty file, like d) if missing; a mount
// already there is replaced.
func Stage(d *Dir, target string) error {
	if err := Unstage(target); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return fmt.Errorf("stage %s: %w", d.name, err)
	}
	if err := makeMountPoint(target, st.Mode&unix.S_IFMT == unix.S_IFDIR); err != nil {
		return fmt.Errorf("stage %s: %w", d.name, err)
	}
	tree, err := unix.OpenTree(d.fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE|unix.AT_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("stage %s: open_tree: %w", d.name, err)
	}
	defer unix.Close(tree)
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("stage %s at %s: move_mount: %w", d.name, target, err)
	}
	return nil
}

// makeMountPoint creates target as a directory (dir) or an empty file, or
// checks that what is there has that type.
func makeMountPoint(target string, dir bool) error {
	var st unix.Stat_t
	if err := unix.Lstat(target, &st); err == nil {
		if isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR; isDir != dir || st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return fmt.Errorf("%s exists with another type", target)
		}
		return nil
	}
	if dir {
		return os.Mkdir(target, 0o700)
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// Unstage removes what Stage mounted at target (every mount stacked there).
// A target that is not a mount point, or is gone, is fine.
func Unstage(target string) error {
	for range 64 {
		err := unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		default:
			return &os.PathError{Op: "unmount", Path: target, Err: err}
		}
	}
	return fmt.Errorf("unmount %s: too many stacked mounts", target)
}
