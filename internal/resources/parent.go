package resources

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/covedev/cove/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// RemoveParent removes the cgroup parent (the directory every
// environment's cgroup is made under, like "cove") from every mounted
// cgroup hierarchy: each v1 controller's hierarchy, named hierarchies such
// as name=systemd, and the v2 (or hybrid unified) one. It removes nothing
// while the parent has a child cgroup or a process in any hierarchy, and
// reports whether the parent is gone. Only the parent's own directory is
// removed, never its ancestors ("a" of "a/b"), which may be someone else's.
func RemoveParent(parent string) (removed bool, err error) {
	p := path.Clean("/" + parent)
	if p == "/" || slices.Contains(strings.Split(parent, "/"), "..") {
		return false, fmt.Errorf("remove cgroup parent %q: not a cgroup below the root", parent)
	}
	mounts, err := hierarchyMounts()
	if err != nil {
		return false, fmt.Errorf("remove cgroup parent %s: %w", parent, err)
	}
	var dirs []string
	for _, m := range mounts {
		d := filepath.Join(m, p)
		used, err := dirInUse(d)
		if err != nil {
			return false, fmt.Errorf("remove cgroup parent %s: %w", parent, err)
		}
		if used {
			return false, nil
		}
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		// The kernel refuses (EBUSY) a cgroup that gained a child or a
		// process meanwhile.
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
			if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.ENOTEMPTY) {
				return false, nil
			}
			return false, fmt.Errorf("remove cgroup parent %s: %w", d, err)
		}
	}
	return true, nil
}

// hierarchyMounts lists the mount points of the cgroup hierarchies (v1 and
// v2) in this mount namespace, one per hierarchy.
func hierarchyMounts() ([]string, error) {
	ms, err := mountinfo.Read()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, m := range ms {
		// Cgroup paths are below a mount of the hierarchy's root; the
		// same hierarchy mounted again (a bind mount) is the same device.
		if (m.FSType != "cgroup" && m.FSType != "cgroup2") || m.Root != "/" || seen[m.Device] {
			continue
		}
		seen[m.Device] = true
		out = append(out, m.Point)
	}
	return out, nil
}
