package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/covedev/cove/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// MountRootfs mounts the overlay of cfg.Layers with the environment's upper
// dir at cfg.Target, the layers' ids shifted into cfg.IDMap. It does nothing
// if Target is already a mount point.
func MountRootfs(ctx context.Context, cfg RootfsConfig) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	cfg.Layers = uniqueLayers(cfg.Layers)
	if ok, err := Mounted(cfg.Target); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	} else if ok {
		return nil
	}
	// Leftovers of an interrupted mount.
	if err := unmountLowers(cfg.LowerDir); err != nil {
		return err
	}
	for _, d := range []string{cfg.UpperDir, cfg.WorkDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		// Root inside the environment owns the top of its file system.
		if err := os.Lchown(d, int(cfg.IDMap.HostID), int(cfg.IDMap.HostID)); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
	}
	if err := os.MkdirAll(cfg.Target, 0o755); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	// Only root (the overlay's mounter) reads the layers' views: keep them
	// away from the environment's and other users' uids.
	if err := os.MkdirAll(cfg.LowerDir, 0o700); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	if err := os.Chmod(cfg.LowerDir, 0o700); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}

	if !cfg.noIDMap {
		err := mountIDMappedOverlay(cfg)
		if err == nil || !errors.Is(err, errIDMapUnsupported) {
			return err
		}
	}
	lowers := make([]string, len(cfg.Layers))
	for i, l := range cfg.Layers {
		s, err := shiftedLayer(ctx, l, cfg.IDMap, cfg.shiftedDir())
		if err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		lowers[i] = s
	}
	return mountOverlay(cfg, lowers)
}

// mountIDMappedOverlay attaches idmapped views of the layers at LowerDir/<i>
// and mounts the overlay over them. The error wraps errIDMapUnsupported if
// the fallback should be used instead.
func mountIDMappedOverlay(cfg RootfsConfig) (err error) {
	ns, err := usernsFD(cfg.IDMap)
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	defer ns.Close()
	defer func() {
		if err != nil {
			_ = unmountLowers(cfg.LowerDir)
		}
	}()
	lowers := make([]string, len(cfg.Layers))
	for i, l := range cfg.Layers {
		dst := filepath.Join(cfg.LowerDir, strconv.Itoa(i))
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		if err := mountIDMapped(l, dst, ns); err != nil {
			return fmt.Errorf("rootfs: layer %d: %w", i, err)
		}
		lowers[i] = dst
	}
	err = mountOverlay(cfg, lowers)
	if errors.Is(err, unix.EINVAL) {
		// Kernels before 5.19 cannot use idmapped mounts as overlay layers.
		return fmt.Errorf("%w: %w", errIDMapUnsupported, err)
	}
	return err
}

// mountOverlay mounts the overlay; lowers are bottom first.
func mountOverlay(cfg RootfsConfig, lowers []string) error {
	var ls []string
	for i := len(lowers) - 1; i >= 0; i-- { // overlay wants the top layer first
		ls = append(ls, lowers[i])
	}
	for _, p := range append([]string{cfg.UpperDir, cfg.WorkDir}, ls...) {
		if strings.ContainsAny(p, ",:\\") {
			return fmt.Errorf("rootfs: path %q has a character overlayfs cannot take", p)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(ls, ":"), cfg.UpperDir, cfg.WorkDir)
	if len(opts) >= os.Getpagesize() {
		return fmt.Errorf("rootfs: overlay options too long (%d bytes): use a shorter lower dir", len(opts))
	}
	// nodev: an image's device nodes (a 0666 block device, say) are never
	// usable through the host's view of the overlay. Not nosuid: the flag
	// would follow the mount into the container (sudo); the overlay's
	// parents are kept out of other host users' reach instead (the
	// runner's environment directories).
	if err := unix.Mount("overlay", cfg.Target, "overlay", unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("rootfs: mount overlay at %s: %w", cfg.Target, err)
	}
	return nil
}

// UnmountRootfs unmounts the overlay at Target and the layers' views under
// LowerDir. Upper and work dirs stay. Unmounting what is not mounted is fine.
func UnmountRootfs(ctx context.Context, cfg RootfsConfig) error {
	if cfg.Target == "" || cfg.LowerDir == "" {
		return errors.New("rootfs: target and lower dirs are required")
	}
	for range 8 { // stacked mounts, if any
		ok, err := Mounted(cfg.Target)
		if err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		if !ok {
			break
		}
		if err := unmount(cfg.Target); err != nil {
			return err
		}
	}
	return unmountLowers(cfg.LowerDir)
}

// unmountLowers unmounts and removes LowerDir/<i> for every i present.
func unmountLowers(lowerDir string) error {
	ents, err := os.ReadDir(lowerDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	mps, err := mountinfo.Points()
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	real, err := filepath.EvalSymlinks(lowerDir)
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		p := filepath.Join(real, e.Name())
		if mps[p] {
			if err := unmount(p); err != nil {
				return err
			}
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rootfs: %w", err)
		}
	}
	return nil
}

func unmount(p string) error {
	err := unix.Unmount(p, unix.UMOUNT_NOFOLLOW)
	if errors.Is(err, unix.EBUSY) {
		// Still in use (a process of a dying environment): detach now, the
		// kernel finishes when the last user goes.
		err = unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("rootfs: unmount %s: %w", p, err)
	}
	return nil
}
