package resources

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
)

// A Freezer freezes and thaws cgroups: every process in the cgroup and
// below it stops being scheduled until thawed (a backup's consistent view
// of an environment, docs/backups.md). On cgroup v1 it writes the freezer
// hierarchy's freezer.state (FROZEN/THAWED), on v2 cgroup.freeze (1/0).
// containerd/cgroups offers both, but only on the real hierarchies; the
// files are written here so that tests can use a fake cgroupfs directory.
type Freezer struct {
	// V1 is the freezer hierarchy's mount point, V2 the unified
	// hierarchy's; "" when absent. V1 wins when both are set (a hybrid
	// host, whose v2 hierarchy has no controllers).
	V1, V2 string
	// Poll is how often Freeze looks whether the kernel finished
	// freezing (neither version notifies in a way worth the code here).
	Poll time.Duration
}

// HostFreezer is the freezer of this host's cgroup hierarchies.
func HostFreezer() Freezer {
	f := Freezer{Poll: 5 * time.Millisecond}
	switch cgroups.Mode() {
	case cgroups.Unified:
		f.V2 = cgroupRoot
	case cgroups.Legacy, cgroups.Hybrid:
		if dirExists(filepath.Join(cgroupRoot, "freezer")) {
			f.V1 = filepath.Join(cgroupRoot, "freezer")
		}
	}
	return f
}

// ErrNoFreezer is returned when the host has no freezer for cgroups.
var ErrNoFreezer = errors.New("no cgroup freezer on this host")

func (f Freezer) dir(p string) (string, error) {
	clean := path.Clean("/" + p)
	if clean == "/" {
		return "", errors.New("freeze: refusing the root cgroup")
	}
	switch {
	case f.V1 != "":
		return filepath.Join(f.V1, clean), nil
	case f.V2 != "":
		return filepath.Join(f.V2, clean), nil
	}
	return "", ErrNoFreezer
}

// Freeze freezes the cgroup at p (a path like CgroupPath returns) and
// waits until the kernel reports every process in it frozen. When ctx
// ends first the cgroup is thawed again and the error says so: nothing
// is left half frozen.
func (f Freezer) Freeze(ctx context.Context, p string) error {
	dir, err := f.dir(p)
	if err != nil {
		return err
	}
	if f.V1 != "" {
		err = writeExisting(filepath.Join(dir, "freezer.state"), "FROZEN")
	} else {
		err = writeExisting(filepath.Join(dir, "cgroup.freeze"), "1")
	}
	if err != nil {
		return fmt.Errorf("freeze cgroup %s: %w", p, err)
	}
	poll := f.Poll
	if poll <= 0 {
		poll = 5 * time.Millisecond
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		frozen, err := f.Frozen(p)
		if err != nil {
			return errors.Join(fmt.Errorf("freeze cgroup %s: %w", p, err), f.Thaw(p))
		}
		if frozen {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("freeze cgroup %s: not frozen in time: %w", p, ctx.Err()), f.Thaw(p))
		case <-t.C:
		}
	}
}

// Thaw thaws the cgroup at p. A cgroup that does not exist (its
// environment was removed) is nothing to thaw.
func (f Freezer) Thaw(p string) error {
	dir, err := f.dir(p)
	if err != nil {
		return err
	}
	if f.V1 != "" {
		err = writeExisting(filepath.Join(dir, "freezer.state"), "THAWED")
	} else {
		err = writeExisting(filepath.Join(dir, "cgroup.freeze"), "0")
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("thaw cgroup %s: %w", p, err)
	}
	return nil
}

// Frozen reports whether the cgroup at p is completely frozen; a cgroup
// that does not exist is not. On v1 a cgroup that is FREEZING (or frozen
// itself while its state reads otherwise) reports false here but is not
// thawed either: use Thawed to know whether anything is left to thaw.
func (f Freezer) Frozen(p string) (bool, error) {
	dir, err := f.dir(p)
	if err != nil {
		return false, err
	}
	if f.V1 != "" {
		b, err := os.ReadFile(filepath.Join(dir, "freezer.state"))
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return strings.TrimSpace(string(b)) == "FROZEN", err
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok && k == "frozen" {
			return strings.TrimSpace(v) == "1", nil
		}
	}
	return false, nil
}

// Thawed reports whether nothing in the cgroup at p was asked to freeze
// (v1: freezer.state THAWED; v2: cgroup.freeze 0); a cgroup that does not
// exist is thawed.
func (f Freezer) Thawed(p string) (bool, error) {
	dir, err := f.dir(p)
	if err != nil {
		return false, err
	}
	file, want := filepath.Join(dir, "cgroup.freeze"), "0"
	if f.V1 != "" {
		file, want = filepath.Join(dir, "freezer.state"), "THAWED"
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == want, nil
}
