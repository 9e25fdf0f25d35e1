// Package resources manages the cgroups that hold environments: where an
// environment's cgroup lives, whether it exists and how to remove it, and
// cgroups created with limits of their own that hold other cgroups (the
// cgroup of an environment made of several containers, each container's
// cgroup below it), on cgroup v1 (legacy and hybrid hosts) and v2.
package resources

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
)

const (
	cgroupRoot     = "/sys/fs/cgroup"
	hybridUnified  = "/sys/fs/cgroup/unified"
	removeInterval = 50 * time.Millisecond
)

// CgroupPath returns the cgroup path of environment id under parent, as used
// in an OCI spec's cgroupsPath with the cgroupfs driver: "/<parent>/<id>".
func CgroupPath(parent, id string) string {
	return path.Join("/", parent, id)
}

// Exists reports whether the cgroup at p (a path like CgroupPath returns)
// exists in any hierarchy.
func Exists(p string) bool {
	switch cgroups.Mode() {
	case cgroups.Unified:
		return dirExists(filepath.Join(cgroupRoot, p))
	case cgroups.Legacy, cgroups.Hybrid:
		if _, err := cgroup1.Load(cgroup1.StaticPath(p)); err == nil {
			return true
		}
		return cgroups.Mode() == cgroups.Hybrid && dirExists(filepath.Join(hybridUnified, p))
	}
	return false
}

// Remove removes the cgroup at p from every hierarchy. The cgroup must be
// empty; processes that are exiting are waited for until ctx is done.
// Removing a cgroup that does not exist succeeds.
func Remove(ctx context.Context, p string) error {
	if p == "" || path.Clean("/"+p) == "/" {
		return fmt.Errorf("remove cgroup: refusing to remove root cgroup")
	}
	for {
		err := remove(p)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove cgroup %s: %w", p, err)
		case <-time.After(removeInterval):
		}
	}
}

func remove(p string) error {
	switch cgroups.Mode() {
	case cgroups.Unified:
		return removeV2(cgroupRoot, p)
	case cgroups.Legacy, cgroups.Hybrid:
		cg, err := cgroup1.Load(cgroup1.StaticPath(p))
		switch {
		case errors.Is(err, cgroup1.ErrCgroupDeleted):
		case err != nil:
			return err
		default:
			if err := cg.Delete(); err != nil && !errors.Is(err, cgroup1.ErrCgroupDeleted) {
				return err
			}
		}
		if cgroups.Mode() == cgroups.Hybrid {
			return removeV2(hybridUnified, p)
		}
		return nil
	}
	return nil
}

func removeV2(mountpoint, p string) error {
	if !dirExists(filepath.Join(mountpoint, p)) {
		return nil
	}
	m, err := cgroup2.Load(p, cgroup2.WithMountpoint(mountpoint))
	if err != nil {
		return err
	}
	if err := m.Delete(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
