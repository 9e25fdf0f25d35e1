package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

// The shield (-shield N) measures as on a host that runs cove alone, on a
// machine shared with other work: the benchmark's own processes (itself,
// cove up with the SSH gateway, the OpenSSH client) move to a cgroup of
// their own, and that cgroup and the environments' parent cgroup get N
// times the default CPU weight. At the root of the hierarchy every other
// process weighs as much as a whole cgroup, so ten busy processes of
// other work would otherwise take ten elevenths of the host from the four
// environments together. Only the root-level CPU weight changes: what cove
// sets below the environments' parent (guarantees, quotas, process
// groups) is what is measured.

// cpuDir is cgroup p's directory in the hierarchy holding the cpu
// controller.
func cpuDir(p string) string {
	if benchkit.CgroupV2() {
		return filepath.Join("/sys/fs/cgroup", p)
	}
	return filepath.Join("/sys/fs/cgroup/cpu", p)
}

// setWeight gives cgroup p n times the default CPU weight.
func setWeight(p string, n int) error {
	name, v := "cpu.shares", strconv.Itoa(1024*n)
	if benchkit.CgroupV2() {
		name, v = "cpu.weight", strconv.Itoa(min(100*n, 10000))
	}
	if err := os.WriteFile(filepath.Join(cpuDir(p), name), []byte(v), 0); err != nil {
		return fmt.Errorf("weight of cgroup %s: %w", p, err)
	}
	return nil
}

// shieldSelf moves this process into a new cgroup of weight n (its
// children, started later, inherit it) and returns what undoes it.
func shieldSelf(n int) (undo func(), err error) {
	p := fmt.Sprintf("/cove-bench-shield-%d", os.Getpid())
	dir := cpuDir(p)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("shield cgroup: %w", err)
	}
	remove := func() {
		for range 50 {
			if err := os.Remove(dir); err == nil || errors.Is(err, fs.ErrNotExist) {
				return
			}
			time.Sleep(100 * time.Millisecond) // its last processes exiting
		}
		benchkit.Progress("cleanup: cgroup %s left in place", p)
	}
	if err := setWeight(p, n); err != nil {
		remove()
		return nil, err
	}
	self := []byte(strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), self, 0); err != nil {
		remove()
		return nil, fmt.Errorf("shield cgroup: %w", err)
	}
	return func() {
		if err := os.WriteFile(filepath.Join(cpuDir("/"), "cgroup.procs"), self, 0); err != nil {
			benchkit.Progress("cleanup: leaving cgroup %s: %v", p, err)
		}
		remove()
	}, nil
}
