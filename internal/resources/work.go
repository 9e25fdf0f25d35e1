package resources

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
)

// Work cgroups hold the runner's own heavy work (Dockerfile builds today;
// image unpacking, backups and restores are meant to use them too), each
// in a cgroup of its own with CPU, memory, pids and block IO limits, so
// that it never takes the host from the environments:
//
//	<cgroup parent>/.work/<name>
//
// Below the environments' parent, the work shares their memory cap (all
// environments and work together leave the host's reserve to the runner);
// ".work" cannot be an environment id. A work cgroup holds processes
// directly: on cgroup v2 no controller is enabled for children below it
// (the "no internal processes" rule), so what runs in it stays in it.

// WorkDir is the directory, below the cgroup parent, of the work cgroups.
const WorkDir = ".work"

var workNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// WorkCgroupPath is the cgroup of the runner's work called name below
// parent (a path like CgroupPath returns).
func WorkCgroupPath(parent, name string) string {
	return path.Join("/", parent, WorkDir, name)
}

// WorkCgroup is a work cgroup that exists.
type WorkCgroup struct {
	parent, name string
	path         string
	v2root       string // the v2 mountpoint ("" on v1)
}

// CreateWorkCgroup creates the work cgroup name below parent with limits l
// (or sets l on it if it exists: it is idempotent, for a runner that
// restarts).
func CreateWorkCgroup(parent, name string, l Limits) (*WorkCgroup, error) {
	switch cgroups.Mode() {
	case cgroups.Unified:
		return createWork(cgroupRoot, parent, name, l)
	case cgroups.Legacy, cgroups.Hybrid:
		return createWork("", parent, name, l)
	}
	return nil, errors.New("work cgroup: no cgroup hierarchy mounted")
}

// createWork creates the work cgroup on the v2 hierarchy at v2root, or
// on the v1 hierarchies when v2root is "".
func createWork(v2root, parent, name string, l Limits) (*WorkCgroup, error) {
	if !workNameRE.MatchString(name) {
		return nil, fmt.Errorf("work cgroup %q: want lower-case letters, digits and '-'", name)
	}
	if path.Clean("/"+parent) == "/" {
		return nil, errors.New("work cgroup: no cgroup parent")
	}
	w := &WorkCgroup{parent: parent, name: name, path: WorkCgroupPath(parent, name), v2root: v2root}
	if v2root == "" {
		if err := Create(w.path, l); err != nil {
			return nil, fmt.Errorf("work cgroup %s: %w", name, err)
		}
		return w, nil
	}
	if err := createV2(v2root, w.path, l); err != nil {
		return nil, fmt.Errorf("work cgroup %s: %w", name, err)
	}
	// createV2 enabled the controllers for children, as for an
	// environment's cgroup; this one holds processes itself.
	dir := filepath.Join(v2root, w.path)
	own, err := readControllers(dir)
	if err != nil {
		return nil, err
	}
	var disable []string
	for _, c := range limitControllers {
		if slices.Contains(own, c) {
			disable = append(disable, "-"+c)
		}
	}
	if len(disable) > 0 {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(disable, " ")), 0); err != nil {
			return nil, fmt.Errorf("work cgroup %s: leave controllers off for children: %w", name, err)
		}
	}
	return w, nil
}

// Path is the cgroup's path (like CgroupPath's).
func (w *WorkCgroup) Path() string { return w.path }

// Add moves process pid, all its threads, into the cgroup in every
// hierarchy. What the process starts afterwards is born in it.
func (w *WorkCgroup) Add(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("work cgroup %s: no process", w.name)
	}
	if w.v2root != "" {
		f := filepath.Join(w.v2root, w.path, "cgroup.procs")
		if err := writeExisting(f, strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("work cgroup %s: add process %d: %w", w.name, pid, err)
		}
		return nil
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(w.path))
	if err != nil {
		return fmt.Errorf("work cgroup %s: %w", w.name, err)
	}
	if err := cg.AddProc(uint64(pid)); err != nil {
		return fmt.Errorf("work cgroup %s: add process %d: %w", w.name, pid, err)
	}
	return nil
}

// Procs are the processes in the cgroup (on v1, in its cpu hierarchy:
// Add puts them in all alike).
func (w *WorkCgroup) Procs() ([]int, error) {
	dir := filepath.Join(w.v2root, w.path)
	if w.v2root == "" {
		dir = filepath.Join(cgroupRoot, "cpu", w.path)
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// Remove removes the cgroup once its processes are gone (waiting for
// exiting ones until ctx ends), and the work directory when no other work
// cgroup is left in it.
func (w *WorkCgroup) Remove(ctx context.Context) error {
	if w.v2root != "" {
		for _, p := range []string{w.path, path.Dir(w.path)} {
			if err := removeV2Dir(ctx, filepath.Join(w.v2root, p), p == w.path); err != nil {
				return err
			}
		}
		return nil
	}
	if err := Remove(ctx, w.path); err != nil {
		return err
	}
	if _, err := RemoveIfUnused(ctx, path.Dir(w.path)); err != nil {
		return fmt.Errorf("work cgroups' directory: %w", err)
	}
	return nil
}

// removeV2Dir removes the cgroup directory dir on v2; one that is still
// in use (another work cgroup below the work directory) is kept unless
// must.
func removeV2Dir(ctx context.Context, dir string, must bool) error {
	for {
		err := os.Remove(dir)
		switch {
		case err == nil, errors.Is(err, os.ErrNotExist):
			return nil
		case !must:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		case <-time.After(removeInterval):
		}
	}
}
