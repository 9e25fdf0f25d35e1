package procgroups

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3"
)

// ErrNoCPUController means the container's cgroup cannot have CPU groups
// (cgroup v2 without the cpu controller delegated to it).
var ErrNoCPUController = errors.New("the cpu controller is not available below the container's cgroup")

// Files reads and writes the groups below containers' cgroups in one
// cgroup hierarchy: v1's cpu hierarchy, or the v2 unified one. Paths are
// cgroup paths like resources.CgroupPath returns; the groups are made by
// the runner (host root) in cgroups an environment cannot write (its
// cgroup file system is mounted read-only), and only processes read from
// a container's own cgroup are moved between its groups.
type Files struct {
	root string // the hierarchy's mountpoint
	v2   bool
}

// FilesV1 is the groups in the cgroup v1 cpu hierarchy mounted at root.
func FilesV1(root string) *Files { return &Files{root: root} }

// FilesV2 is the groups in the cgroup v2 hierarchy mounted at root.
func FilesV2(root string) *Files { return &Files{root: root, v2: true} }

// HostFiles is the groups in this host's hierarchy holding the cpu
// controller: v2 on unified hosts, v1's cpu hierarchy on others.
func HostFiles() (*Files, error) {
	switch cgroups.Mode() {
	case cgroups.Unified:
		return FilesV2("/sys/fs/cgroup"), nil
	case cgroups.Legacy, cgroups.Hybrid:
		return FilesV1("/sys/fs/cgroup/cpu"), nil
	}
	return nil, errors.New("no cgroup hierarchy mounted")
}

func (f *Files) dir(cg string, g Group) string {
	return filepath.Join(f.root, filepath.Clean("/"+cg), string(g))
}

// Exists reports whether the cgroup cg exists.
func (f *Files) Exists(cg string) bool {
	fi, err := os.Stat(f.dir(cg, Root))
	return err == nil && fi.IsDir()
}

// Setup makes the groups below cg with their weights; it may be called
// again. On v2, where a cgroup with groups below it may hold no process,
// it first moves the container's processes into the agent group.
func (f *Files) Setup(cg string) error {
	if !f.Exists(cg) {
		return fmt.Errorf("cgroup %s: %w", cg, fs.ErrNotExist)
	}
	for _, g := range Groups {
		if err := os.Mkdir(f.dir(cg, g), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("make CPU group %s of %s: %w", g, cg, err)
		}
	}
	if f.v2 {
		if err := f.enableV2(cg); err != nil {
			return err
		}
	}
	for _, g := range Groups {
		name, val := "cpu.shares", strconv.FormatUint(Weight(g)*1024/100, 10)
		if f.v2 {
			name, val = "cpu.weight", strconv.FormatUint(Weight(g), 10)
		}
		if err := os.WriteFile(filepath.Join(f.dir(cg, g), name), []byte(val), 0); err != nil {
			return fmt.Errorf("set weight of CPU group %s of %s: %w", g, cg, err)
		}
	}
	return nil
}

// enableV2 moves the processes of cg into its agent group (the agent may
// fork meanwhile: a few rounds) and enables the cpu controller for its
// groups.
func (f *Files) enableV2(cg string) error {
	ctrls, err := os.ReadFile(filepath.Join(f.dir(cg, Root), "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", cg, err)
	}
	if !hasWord(ctrls, "cpu") {
		return ErrNoCPUController
	}
	sub, err := os.ReadFile(filepath.Join(f.dir(cg, Root), "cgroup.subtree_control"))
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", cg, err)
	}
	if hasWord(sub, "cpu") {
		return nil
	}
	for range 10 {
		pids, err := f.Procs(cg, Root)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			if err := f.Move(cg, Agent, pid); err != nil && !errors.Is(err, errGone) {
				return err
			}
		}
	}
	if err := os.WriteFile(filepath.Join(f.dir(cg, Root), "cgroup.subtree_control"), []byte("+cpu"), 0); err != nil {
		return fmt.Errorf("enable the cpu controller below %s: %w", cg, err)
	}
	return nil
}

func hasWord(b []byte, w string) bool {
	for _, f := range bytes.Fields(b) {
		if string(f) == w {
			return true
		}
	}
	return false
}

// Procs lists the processes in group g of cg (Root: in cg itself).
func (f *Files) Procs(cg string, g Group) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(f.dir(cg, g), "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, l := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(l)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("%s: bad pid %q", filepath.Join(f.dir(cg, g), "cgroup.procs"), l)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// Holds reports whether a process whose /proc/<pid>/cgroup reads
// procCgroup is in cg or below it, in this hierarchy (v1: the line of the
// hierarchy holding the cpu controller; v2: the unified line).
func (f *Files) Holds(cg string, procCgroup []byte) bool {
	cg = filepath.Clean("/" + cg)
	for _, l := range strings.Split(string(procCgroup), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if f.v2 != (parts[0] == "0" && parts[1] == "") {
			continue
		}
		if !f.v2 && !slices.Contains(strings.Split(parts[1], ","), "cpu") {
			continue
		}
		return parts[2] == cg || strings.HasPrefix(parts[2], cg+"/")
	}
	return false
}

// errGone is a process that exited before it could be moved.
var errGone = errors.New("process exited")

// Move moves process pid (all its threads) into group g of cg.
func (f *Files) Move(cg string, g Group, pid int) error {
	err := os.WriteFile(filepath.Join(f.dir(cg, g), "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
	if errors.Is(err, os.ErrProcessDone) || isESRCH(err) {
		return errGone
	}
	if err != nil {
		return fmt.Errorf("move process %d to CPU group %s of %s: %w", pid, g, cg, err)
	}
	return nil
}
