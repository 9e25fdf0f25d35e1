// Package diskquota gives an environment a disk of its own: an ext4 file
// system in a sparse image file, attached to a loop device and mounted on
// the runner host, so that what the environment writes (its overlay upper
// dir, workspace, volumes) stops at the image's size with ENOSPC, and df
// inside shows that size.
//
// Trust: the image file and its mount point live in the environment's
// root-owned directory; the environment writes files inside the mounted
// file system but never the raw image, so the host only ever mounts a
// file system it made itself (mkfs here), nosuid and nodev. The loop
// device is attached with autoclear: it detaches when the file system is
// unmounted (or when the runner dies before mounting it), so a stopped or
// deleted environment holds no loop device.
//
// Why a loop image rather than btrfs qgroups: it needs no particular host
// file system (ext4 or XFS data dirs work), df shows the quota without
// help, and bench/disk measured its cost (docs/performance.md).
package diskquota

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/covedev/cove/internal/resources"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// MinSize is the smallest disk Create makes: below it ext4's own metadata
// (journal, inode tables) takes a large part of the space.
const MinSize = 64 << 20

// blockSize is the file system's and the loop device's block size: equal,
// so that the loop device can use direct IO on the image file.
const blockSize = 4096

// Check reports whether this host can give environments a disk: loop
// devices, ext4 in the kernel and mkfs.ext4. The error says what is
// missing.
func Check() error {
	f, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("no loop devices (/dev/loop-control: %w): load the loop module (modprobe loop), or on a container host give the runner /dev/loop-control", err)
	}
	f.Close()
	fss, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return err
	}
	if !hasFS(fss, "ext4") {
		return errors.New("the kernel has no ext4 file system (modprobe ext4)")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		return errors.New("mkfs.ext4 not found: install e2fsprogs")
	}
	return nil
}

func hasFS(procFilesystems []byte, name string) bool {
	for line := range bytes.Lines(procFilesystems) {
		f := strings.Fields(string(line))
		if len(f) > 0 && f[len(f)-1] == name {
			return true
		}
	}
	return false
}

// Create makes the image file img of size bytes with an empty ext4 file
// system whose root is owned by root and mode 0711. An existing img is
// kept as it is (a runner killed half-way made its file system under a
// temporary name, which is made again).
func Create(ctx context.Context, img string, size int64) error {
	if size < MinSize {
		return fmt.Errorf("disk size %d bytes is below the minimum of %d MiB", size, MinSize>>20)
	}
	if _, err := os.Lstat(img); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	tmp := img + ".new"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	err = reserve(f, size-size%blockSize)
	f.Close()
	if err != nil {
		os.Remove(tmp)
		return err
	}
	// Lazy inode table and journal initialisation: unwritten blocks read
	// as zeros already, so nothing needs writing now (and Mount tells the
	// kernel not to zero the tables later either). No blocks reserved for
	// root: the environment's root is not the host's and could not use
	// them.
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-b", strconv.Itoa(blockSize), "-m", "0",
		"-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0", "-L", "cove-env", tmp)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := resources.RunChild(cmd); err != nil { // not in the runner's weighted cgroup
		os.Remove(tmp)
		return fmt.Errorf("mkfs.ext4: %w: %s", err, bytes.TrimSpace(out.Bytes()))
	}
	if err := os.Rename(tmp, img); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(img))
}

// hostReserve is what must stay free on a file system of total bytes
// holding the disk images after one is made: the runner's state, logs and
// image layers live there too. 1 GiB, or a tenth of a smaller one.
func hostReserve(total int64) int64 { return min(1<<30, total/10) }

// reserve gives f size bytes that are its own (fallocate: the blocks are
// allocated, unwritten, at once): a sparse image would take its blocks
// only as the environment writes, and once the host's file system is
// full, a neighbour's disk would lose data it had already fsync'ed (its
// loop device gets write errors for blocks it never had). A disk that
// would leave less than hostReserve free is refused.
func reserve(f *os.File, size int64) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("size disk image: %w", err)
	}
	free, keep := int64(st.Bavail)*st.Bsize, hostReserve(int64(st.Blocks)*st.Bsize)
	if free-size < keep {
		return errdefs.ResourceExhausted(fmt.Errorf("no room for a %d MiB disk on this runner: %d MiB free on its data dir's file system, %d MiB of which stay for the runner",
			size>>20, max(free, 0)>>20, keep>>20))
	}
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	switch {
	case errors.Is(err, unix.ENOSPC):
		return errdefs.ResourceExhausted(fmt.Errorf("no room for a %d MiB disk on this runner's data dir: %w", size>>20, err))
	case errors.Is(err, unix.EOPNOTSUPP):
		return errdefs.FailedPrecondition(fmt.Errorf("the runner's data dir cannot reserve space for a disk (fallocate is not supported there: use ext4 or XFS): %w", err))
	case err != nil:
		return fmt.Errorf("reserve disk image: %w", err)
	}
	if err := unix.Fstatfs(int(f.Fd()), &st); err == nil && int64(st.Bavail)*st.Bsize < keep {
		// Another disk was made meanwhile.
		return errdefs.ResourceExhausted(fmt.Errorf("no room for a %d MiB disk on this runner: %d MiB must stay free for the runner", size>>20, keep>>20))
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Mount attaches img to a free loop device (direct IO, autoclear) and
// mounts its file system at target (nosuid, nodev). It is idempotent:
// img already mounted at target is left as it is; anything else mounted
// there is an error.
func Mount(img, target string) error {
	if dev, err := mountedDevice(target); err != nil {
		return err
	} else if dev != "" {
		backing, err := backingFile(dev)
		if err != nil || backing != img {
			return fmt.Errorf("%s is already mounted from %s (not the disk image %s)", target, dev, img)
		}
		return nil
	}
	loop, err := loopFor(img)
	if err != nil {
		return err
	}
	// loop stays open until the file system holds the device: autoclear
	// detaches it when the last holder lets go, here if mounting fails.
	defer loop.Close()
	if err := os.MkdirAll(target, 0o711); err != nil {
		return err
	}
	if err := unix.Mount(loop.Name(), target, "ext4", unix.MS_NOSUID|unix.MS_NODEV, "noinit_itable"); err != nil {
		return fmt.Errorf("mount %s (%s) at %s: %w", img, loop.Name(), target, err)
	}
	// The file system's root, through a handle that names it and nothing
	// an environment could have put there.
	fd, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open disk root %s: %w", target, err)
	}
	defer unix.Close(fd)
	return unix.Fchmod(fd, 0o711)
}

// loopFor opens the loop device of img: the one already attached to it if
// there is one (the file system may still be mounted in a mount namespace
// that outlived the runner's mount: a second device on the same image
// would be a second, independent ext4 on the same blocks, and corrupt it),
// or a new one.
func loopFor(img string) (*os.File, error) {
	ls, err := Loops()
	if err != nil {
		return nil, err
	}
	for _, l := range ls {
		if l.Backing == img && !l.Deleted {
			if dev, err := os.OpenFile(l.Device, os.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
				if b, err := backingFile(l.Device); err == nil && b == img {
					return dev, nil
				}
				dev.Close()
			}
		}
	}
	f, err := os.OpenFile(img, os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dev, err := attach(f, true)
	if err != nil {
		return nil, fmt.Errorf("attach %s to a loop device: %w", img, err)
	}
	return dev, nil
}

// attach configures a free loop device on f (detaching itself when its
// last holder lets go, with autoclear) and returns it open.
func attach(f *os.File, autoclear bool) (*os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	cfg := unix.LoopConfig{Fd: uint32(f.Fd()), Size: blockSize}
	cfg.Info.Flags = unix.LO_FLAGS_DIRECT_IO
	if autoclear {
		cfg.Info.Flags |= unix.LO_FLAGS_AUTOCLEAR
	}
	copy(cfg.Info.File_name[:], "cove-env-disk")
	// Another process may take the device between GET_FREE and CONFIGURE:
	// then ask again.
	for range 16 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		dev, err := openLoop(n)
		if err != nil {
			return nil, err
		}
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, err
		}
	}
	return nil, errors.New("every free loop device was taken by someone else first")
}

// openLoop opens /dev/loopN, making the node where /dev is not a devtmpfs
// (a container's /dev).
func openLoop(n int) (*os.File, error) {
	name := fmt.Sprintf("/dev/loop%d", n)
	f, err := os.OpenFile(name, os.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		if err := unix.Mknod(name, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("make %s: %w", name, err)
		}
		f, err = os.OpenFile(name, os.O_RDWR|unix.O_CLOEXEC, 0)
	}
	return f, err
}

// Unmount unmounts target, if mounted; the loop device detaches with it.
// Detach then makes sure of that.
func Unmount(target string) error {
	err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("unmount disk %s: still in use", target)
	}
	return fmt.Errorf("unmount disk %s: %w", target, err)
}

// Usage is the used and total size of the file system mounted at target.
func Usage(target string) (used, size int64, err error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(target, &fs); err != nil {
		return 0, 0, err
	}
	return int64(fs.Blocks-fs.Bfree) * fs.Bsize, int64(fs.Blocks) * fs.Bsize, nil
}

// mountedDevice is the device ("/dev/loopN") mounted at target, "" if
// none.
func mountedDevice(target string) (string, error) {
	ok, err := mountinfo.IsMountPoint(target)
	if err != nil || !ok {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Lstat(target, &st); err != nil {
		return "", err
	}
	if unix.Major(st.Dev) != 7 {
		return fmt.Sprintf("device %d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)), nil
	}
	return fmt.Sprintf("/dev/loop%d", unix.Minor(st.Dev)), nil
}
