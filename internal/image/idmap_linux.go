package image

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"

	"github.com/covedev/cove/internal/idmap"
	"golang.org/x/sys/unix"
)

// usernsFD returns an fd of a new user namespace mapping ids [0, r.Size) to
// [r.HostID, r.HostID+r.Size) for uids and gids. The namespace is created by a
// short-lived child that is stopped (ptrace) before it runs any code, then
// killed and reaped; the returned fd keeps the namespace alive.
func usernsFD(r idmap.Range) (*os.File, error) {
	if r.Size == 0 {
		return nil, fmt.Errorf("empty id range")
	}
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(r.HostID), Size: int(r.Size)}}
	// Ptrace is per thread: keep the fork, the wait and the kill on one.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pid, err := syscall.ForkExec("/proc/self/exe", []string{"cove-userns"}, &syscall.ProcAttr{
		Sys: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER,
			UidMappings: m,
			GidMappings: m,
			Ptrace:      true, // stops at execve: the binary never runs
			Pdeathsig:   syscall.SIGKILL,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("create user namespace: %w", err)
	}
	defer func() {
		_ = unix.Kill(pid, unix.SIGKILL)
		for {
			_, err := unix.Wait4(pid, nil, 0, nil)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
	}()
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", pid))
	if err != nil {
		return nil, fmt.Errorf("open user namespace: %w", err)
	}
	return f, nil
}

// errIDMapUnsupported means the kernel or file system cannot idmap a mount.
var errIDMapUnsupported = errors.New("idmapped mounts not supported")

// idmappedTree returns a detached, read-only clone of the mount at src whose
// ids are mapped through the user namespace userns.
func idmappedTree(src string, userns *os.File) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return nil, fmt.Errorf("open_tree %s: %w: %w", src, errIDMapUnsupported, err)
		}
		return nil, fmt.Errorf("open_tree %s: %w", src, err)
	}
	tree := os.NewFile(uintptr(fd), src)
	attr := unix.MountAttr{
		Attr_set:  unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY,
		Userns_fd: uint64(userns.Fd()),
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		tree.Close()
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("idmap %s: %w: %w", src, errIDMapUnsupported, err)
		}
		return nil, fmt.Errorf("idmap %s: %w", src, err)
	}
	return tree, nil
}

// mountIDMapped attaches an idmapped, read-only view of src at dst.
func mountIDMapped(src, dst string, userns *os.File) error {
	tree, err := idmappedTree(src, userns)
	if err != nil {
		return err
	}
	defer tree.Close()
	if err := unix.MoveMount(int(tree.Fd()), "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount %s: %w", dst, err)
	}
	return nil
}

// IDMappedMountsSupported reports whether dir (on its file system) can be
// mounted idmapped on this kernel by this process.
func IDMappedMountsSupported(dir string) bool {
	ns, err := usernsFD(idmap.Range{HostID: 1 << 30, Size: 65536})
	if err != nil {
		return false
	}
	defer ns.Close()
	tree, err := idmappedTree(dir, ns)
	if err != nil {
		return false
	}
	tree.Close() // a detached mount goes away with its last fd
	return true
}
