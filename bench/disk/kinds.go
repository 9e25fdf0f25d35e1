package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/covedev/cove/bench/internal/benchkit"
	"github.com/covedev/cove/internal/diskquota"
	"golang.org/x/sys/unix"
)

// plainKind is a directory on the data dir's file system: no quota.
type plainKind struct{}

func (plainKind) name() string { return "plain dir" }
func (plainKind) setup(_ context.Context, dir string, _ int64) (string, error) {
	return dir, os.Mkdir(dir, 0o711)
}
func (plainKind) teardown(_ context.Context, dir string) error { return os.RemoveAll(dir) }

// loopKind is what cove does (internal/diskquota).
type loopKind struct{}

func (loopKind) name() string { return "loop ext4" }
func (loopKind) setup(ctx context.Context, dir string, size int64) (string, error) {
	if err := os.Mkdir(dir, 0o711); err != nil {
		return "", err
	}
	img, mnt := filepath.Join(dir, "disk.img"), filepath.Join(dir, "disk")
	if err := diskquota.Create(ctx, img, size); err != nil {
		return "", err
	}
	return mnt, diskquota.Mount(img, mnt)
}
func (loopKind) teardown(_ context.Context, dir string) error {
	img, mnt := filepath.Join(dir, "disk.img"), filepath.Join(dir, "disk")
	if err := diskquota.Unmount(mnt); err != nil {
		return err
	}
	if err := diskquota.Detach(img); err != nil {
		// Someone's mount namespace made while the disk was mounted (a
		// container starting, a clone sandbox: other tests on a shared
		// machine) holds it; autoclear detaches it when they let go.
		benchkit.Progress("%v (left to autoclear)", err)
	}
	return os.RemoveAll(dir)
}

// btrfsKind is a subvolume with a qgroup limit in one btrfs pool, a
// loop-mounted image made once for the whole run (its cost is not counted
// per environment).
type btrfsKind struct{ pool string }

func newBtrfsKind(ctx context.Context, tmp string, cl *benchkit.Cleanups) (*btrfsKind, error) {
	img, pool := filepath.Join(tmp, "btrfs.img"), filepath.Join(tmp, "btrfs")
	f, err := os.Create(img)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(64 << 30)
	f.Close()
	if err != nil {
		return nil, err
	}
	if err := cmd(ctx, "mkfs.btrfs", "-q", img); err != nil {
		return nil, err
	}
	if err := os.Mkdir(pool, 0o711); err != nil {
		return nil, err
	}
	// mount -o loop attaches with autoclear: unmounting detaches.
	if err := cmd(ctx, "mount", "-o", "loop,nosuid,nodev", img, pool); err != nil {
		return nil, err
	}
	cl.Add(func() {
		if err := unix.Unmount(pool, 0); err != nil {
			benchkit.Progress("cleanup: unmount btrfs pool %s: %v", pool, err)
		}
	})
	if err := cmd(ctx, "btrfs", "quota", "enable", pool); err != nil {
		return nil, err
	}
	return &btrfsKind{pool: pool}, nil
}

func (b *btrfsKind) name() string { return "btrfs qgroup" }
func (b *btrfsKind) sub(dir string) string {
	return filepath.Join(b.pool, filepath.Base(dir))
}
func (b *btrfsKind) setup(ctx context.Context, dir string, size int64) (string, error) {
	sv := b.sub(dir)
	if err := cmd(ctx, "btrfs", "-q", "subvolume", "create", sv); err != nil {
		return "", err
	}
	return sv, cmd(ctx, "btrfs", "qgroup", "limit", strconv.FormatInt(size, 10), sv)
}
func (b *btrfsKind) teardown(ctx context.Context, dir string) error {
	sv := b.sub(dir)
	out, err := exec.CommandContext(ctx, "btrfs", "inspect-internal", "rootid", sv).Output()
	if err != nil {
		return fmt.Errorf("btrfs inspect-internal rootid %s: %w", sv, err)
	}
	if err := cmd(ctx, "btrfs", "-q", "subvolume", "delete", sv); err != nil {
		return err
	}
	// The subvolume's qgroup stays behind unless destroyed (btrfs-progs
	// before 6.9 has no subvolume delete --delete-qgroup). It may refuse
	// while the cleaner has not dropped the subvolume yet: then it stays in
	// the pool, which goes at the end of the run.
	_ = cmd(ctx, "btrfs", "qgroup", "destroy", "0/"+string(bytes.TrimSpace(out)), b.pool)
	return nil
}

func cmd(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %v: %w: %s", name, args, err, bytes.TrimSpace(out))
	}
	return nil
}
