package resources

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
)

// RemoveIfUnused removes the cgroup at p from every hierarchy unless it
// still has child cgroups or processes in one of them; removed reports
// whether p is gone. A cgroup that does not exist counts as removed. The
// caller must keep new children from being created below p meanwhile.
func RemoveIfUnused(ctx context.Context, p string) (removed bool, err error) {
	if p == "" || filepath.Clean("/"+p) == "/" {
		return false, errors.New("remove cgroup: refusing to remove root cgroup")
	}
	used, err := InUse(p)
	if err != nil {
		return false, err
	}
	if used {
		return false, nil
	}
	if err := Remove(ctx, p); err != nil {
		// Whatever came to use it meanwhile keeps it.
		if used, uerr := InUse(p); uerr == nil && used {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// InUse reports whether the cgroup at p has child cgroups or processes in
// any hierarchy. A cgroup that does not exist is not in use.
func InUse(p string) (bool, error) {
	dirs, err := dirs(p)
	if err != nil {
		return false, fmt.Errorf("cgroup %s: %w", p, err)
	}
	for _, d := range dirs {
		used, err := dirInUse(d)
		if err != nil {
			return false, fmt.Errorf("cgroup %s: %w", p, err)
		}
		if used {
			return true, nil
		}
	}
	return false, nil
}

// dirs returns the directories of cgroup p in every mounted hierarchy,
// whether or not they exist.
func dirs(p string) ([]string, error) {
	switch cgroups.Mode() {
	case cgroups.Unified:
		return []string{filepath.Join(cgroupRoot, p)}, nil
	case cgroups.Legacy, cgroups.Hybrid:
		subs, err := cgroup1.Default()
		if err != nil {
			return nil, err
		}
		var out []string
		for _, s := range subs {
			if ps, ok := s.(interface{ Path(string) string }); ok {
				out = append(out, ps.Path(p))
			}
		}
		if cgroups.Mode() == cgroups.Hybrid {
			out = append(out, filepath.Join(hybridUnified, p))
		}
		return out, nil
	}
	return nil, nil
}

func dirInUse(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, e := range ents {
		if e.IsDir() {
			return true, nil
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // removed meanwhile
	}
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) != "", nil
}
