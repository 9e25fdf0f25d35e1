package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
	"github.com/covedev/cove/internal/resources"
)

// The client side of a keystroke — the terminal (this benchmark's pty
// reader, which timestamps the echo), the OpenSSH client and its
// ProxyCommand (`cove ssh --stdio`) — runs on the developer's laptop in
// production, not on the runner host next to the environments' spinners.
// With -client laptop (or both) it stands in for a laptop: it moves into a
// cgroup of its own, created and removed by the benchmark, at the highest
// CPU weight (v1 cpu.shares 262144, v2 cpu.weight 10000), so its
// wake-ups do not wait behind the host's load. With -client host it stays
// where the benchmark runs (the -shield cgroup, or where it was started),
// as every figure before 2026-12-04 was measured; -client both (the
// default) measures each case both ways, in alternating blocks of
// keystrokes.

// Client placements.
const (
	clientLaptop = "laptop"
	clientHost   = "host"
)

// clientModes are the placements -client asks for, in the order reported.
func clientModes(flag string) ([]string, error) {
	switch flag {
	case "both":
		return []string{clientLaptop, clientHost}, nil
	case clientLaptop, clientHost:
		return []string{flag}, nil
	}
	return nil, fmt.Errorf("-client %q: want laptop, host or both", flag)
}

// clientPlacer moves the client side between its laptop cgroup and the
// host's.
type clientPlacer struct {
	laptop string // the laptop cgroup's directory ("" without one)
	host   string // the directory of the cgroup the benchmark runs in
}

// newClientPlacer creates the laptop cgroup (when modes ask for it) and
// returns what removes it; host is the benchmark's cgroup path (in the
// cpu hierarchy) to come back to.
func newClientPlacer(modes []string, host string) (*clientPlacer, func(), error) {
	c := &clientPlacer{host: cpuDir(host)}
	need := false
	for _, m := range modes {
		need = need || m == clientLaptop
	}
	if !need {
		return c, func() {}, nil
	}
	p := fmt.Sprintf("/cove-bench-client-%d", os.Getpid())
	dir := cpuDir(p)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("client cgroup: %w", err)
	}
	remove := func() {
		for range 50 {
			if err := os.Remove(dir); err == nil || errors.Is(err, fs.ErrNotExist) {
				return
			}
			time.Sleep(100 * time.Millisecond) // the ssh client exiting
		}
		benchkit.Progress("cleanup: cgroup %s left in place", p)
	}
	name, v := "cpu.shares", "262144"
	if benchkit.CgroupV2() {
		name, v = "cpu.weight", "10000"
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0); err != nil {
		remove()
		return nil, nil, fmt.Errorf("client cgroup weight: %w", err)
	}
	c.laptop = dir
	return c, remove, nil
}

// place moves pids (and this process) to the laptop cgroup or back to
// the host's.
func (c *clientPlacer) place(mode string, pids []int) error {
	dir := c.host
	if mode == clientLaptop {
		dir = c.laptop
	}
	for _, pid := range append([]int{os.Getpid()}, pids...) {
		err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		if err != nil && pid == os.Getpid() {
			return fmt.Errorf("client to %s: %w", dir, err)
		}
		// Another pid may have exited meanwhile: then it no longer
		// matters where it is.
	}
	return nil
}

// ownCPUCgroup is this process's cgroup in the cpu hierarchy (v1) or the
// unified one (v2).
func ownCPUCgroup() (string, error) {
	return resources.ProcCPUCgroup(os.Getpid(), benchkit.CgroupV2())
}

// cpuCgroupOf describes process pid's CPU cgroup and weight, for the
// report.
func cpuCgroupOf(pid int) string {
	p, err := resources.ProcCPUCgroup(pid, benchkit.CgroupV2())
	if err != nil {
		return err.Error()
	}
	name := "cpu.shares"
	if benchkit.CgroupV2() {
		name = "cpu.weight"
	}
	b, err := os.ReadFile(filepath.Join(cpuDir(p), name))
	if err != nil {
		return p
	}
	return fmt.Sprintf("%s (%s %s)", p, name, strings.TrimSpace(string(b)))
}
