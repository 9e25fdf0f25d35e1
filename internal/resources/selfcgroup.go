package resources

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"
)

// The runner's own cgroup: the runner process (its SSH gateway, port
// proxy, control loops and API) moves into a cgroup next to the
// environments' parent,
//
//	<cgroup parent>.runner   (for the parent "cove": /cove.runner)
//
// with a high CPU weight, so that under load its latency-critical work
// gets a CPU before the environments' builds do — as systemd weighs
// system.slice against machine.slice. It is the parent's sibling, not its
// child: a group that holds the environments is always busy under load,
// and the kernel hands a group's weight out per CPU by its load, so a
// runner inside it would wait for the environments' group to be picked
// first (bench/interactive measured it: docs/performance.md). A sibling
// is idle until the runner wakes, and then weighs its whole weight. Only
// the CPU weight is the point: on cgroup v1 the runner moves in the cpu
// hierarchy alone (its memory, pids and IO stay where they were); on v2
// the one hierarchy holds all controllers, and the runner stays outside
// the environments' memory cap either way.
//
// What the runner starts must not inherit that weight (a git clone, runc,
// mkfs, buildkitd): StartChild starts a command in the cgroup the runner
// was in before it moved (its "home"), atomically — on v2 with
// CLONE_INTO_CGROUP, on v1 from a thread moved home for the fork (v1
// places threads, and a child is born where the thread that forked it
// is). Containers, work cgroups and backup/unpack children are then
// placed where they always were.

// RunnerSuffix names the runner's own cgroup after the cgroup parent.
const RunnerSuffix = ".runner"

// RunnerCgroupPath is the runner's own cgroup for the cgroup parent
// parent: its sibling, named after it.
func RunnerCgroupPath(parent string) string { return path.Clean("/"+parent) + RunnerSuffix }

// MaxCPUWeight is the largest weight (cgroup v2's cpu.weight scale, where
// 100 is the default).
const MaxCPUWeight = 10000

// SelfCgroup is the runner process's own cgroup, entered.
type SelfCgroup struct {
	dir    string // the cgroup's directory in the cpu (v1) or unified (v2) hierarchy
	home   string // the directory of the cgroup the process was in
	v2     bool
	homeFD int // v2: the home directory, open for CLONE_INTO_CGROUP
	pid    int
	// warned: a child could not be started at home once (reported once).
	warned atomic.Bool
	// Warn, if set, is told (once) when a child had to be started in the
	// runner's cgroup because its thread could not move home (v1).
	Warn func(error)
}

// active is the entered SelfCgroup, for StartChild.
var active atomic.Pointer[SelfCgroup]

// EnterRunnerCgroup moves this process into the runner's own cgroup next
// to parent with CPU weight (1–MaxCPUWeight on v2's scale; v1 cpu.shares =
// weight × 1024 / 100). The cgroup is created, or reused as it is (a
// runner killed before it could remove it). Leave undoes it.
func EnterRunnerCgroup(parent string, weight int) (*SelfCgroup, error) {
	switch cgroups.Mode() {
	case cgroups.Unified:
		return enterSelf(cgroupRoot, true, parent, weight, os.Getpid())
	case cgroups.Legacy, cgroups.Hybrid:
		return enterSelf(filepath.Join(cgroupRoot, "cpu"), false, parent, weight, os.Getpid())
	}
	return nil, errors.New("runner cgroup: no cgroup hierarchy mounted")
}

// enterSelf enters process pid into the runner's cgroup next to parent in
// the hierarchy mounted at root: v2's unified one, or v1's cpu hierarchy.
func enterSelf(root string, v2 bool, parent string, weight, pid int) (*SelfCgroup, error) {
	if weight < 1 || weight > MaxCPUWeight {
		return nil, fmt.Errorf("runner cgroup: CPU weight %d: want 1 to %d", weight, MaxCPUWeight)
	}
	if path.Clean("/"+parent) == "/" {
		return nil, errors.New("runner cgroup: no cgroup parent")
	}
	home, err := ProcCPUCgroup(pid, v2)
	if err != nil {
		return nil, fmt.Errorf("runner cgroup: %w", err)
	}
	p := RunnerCgroupPath(parent)
	if home == p {
		// Started from inside it: its children would be born in it.
		return nil, fmt.Errorf("runner cgroup: the runner already runs in %s: start it from another cgroup", p)
	}
	s := &SelfCgroup{dir: filepath.Join(root, p), home: filepath.Join(root, home), v2: v2, homeFD: -1, pid: pid}
	if v2 {
		err = s.makeV2(root, p, weight)
	} else {
		err = s.makeV1(weight)
	}
	if err != nil {
		return nil, fmt.Errorf("runner cgroup %s: %w", p, err)
	}
	if v2 {
		fd, err := unix.Open(s.home, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("runner cgroup: open the runner's cgroup %s: %w", home, err)
		}
		s.homeFD = fd
	}
	if err := writeCgroupFile(filepath.Join(s.dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
		s.closeHome()
		return nil, fmt.Errorf("runner cgroup %s: move the runner in: %w", p, err)
	}
	active.Store(s)
	return s, nil
}

// makeV1 creates the cgroup in v1's cpu hierarchy with weight.
func (s *SelfCgroup) makeV1(weight int) error {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	shares := min(max(weight*1024/100, 2), 262144)
	return writeCgroupFile(filepath.Join(s.dir, "cpu.shares"), strconv.Itoa(shares))
}

// makeV2 creates cgroup p on the v2 hierarchy at root, with the cpu
// controller enabled on the way down, and weight.
func (s *SelfCgroup) makeV2(root, p string, weight int) error {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	dir := root
	for _, part := range parts {
		ctrls, err := readControllers(dir)
		if err != nil {
			return err
		}
		if !slices.Contains(ctrls, "cpu") {
			return errors.New("the cpu controller is not available")
		}
		if err := enableCPU(dir); err != nil {
			return err
		}
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return writeCgroupFile(filepath.Join(s.dir, "cpu.weight"), strconv.Itoa(weight))
}

// enableCPU enables the cpu controller for the children of dir (v2).
func enableCPU(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	if slices.Contains(strings.Fields(string(b)), "cpu") {
		return nil
	}
	if err := writeCgroupFile(filepath.Join(dir, "cgroup.subtree_control"), "+cpu"); err != nil {
		return fmt.Errorf("enable the cpu controller below %s: %w", dir, err)
	}
	return nil
}

// writeCgroupFile writes s to the cgroup interface file name (created if
// missing: only in a fake cgroupfs, the kernel makes them).
func writeCgroupFile(name, s string) error { return os.WriteFile(name, []byte(s), 0o644) }

// ProcCPUCgroup is the cgroup of process pid: in v1's cpu hierarchy, or
// v2's.
func ProcCPUCgroup(pid int, v2 bool) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if v2 && parts[0] == "0" && parts[1] == "" {
			return parts[2], nil
		}
		if !v2 && slices.Contains(strings.Split(parts[1], ","), "cpu") {
			return parts[2], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("process %d: no cpu cgroup in /proc/%d/cgroup", pid, pid)
}

// Path is the directory of the runner's cgroup in its hierarchy.
func (s *SelfCgroup) Path() string { return s.dir }

// Home is the directory of the cgroup the runner was in, where its
// children are started.
func (s *SelfCgroup) Home() string { return s.home }

// Leave moves the runner back to the cgroup it came from and removes its
// own (waiting until ctx ends for the kernel to let it go).
func (s *SelfCgroup) Leave(ctx context.Context) error {
	active.CompareAndSwap(s, nil)
	defer s.closeHome()
	if err := writeCgroupFile(filepath.Join(s.home, "cgroup.procs"), strconv.Itoa(s.pid)); err != nil {
		return fmt.Errorf("runner cgroup: move the runner back to %s: %w", s.home, err)
	}
	for {
		err := unix.Rmdir(s.dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("runner cgroup: remove %s: %w", s.dir, err)
		case <-time.After(removeInterval):
		}
		// A thread a StartChild under way put back meanwhile.
		_ = writeCgroupFile(filepath.Join(s.home, "cgroup.procs"), strconv.Itoa(s.pid))
	}
}

func (s *SelfCgroup) closeHome() {
	if s.homeFD >= 0 {
		unix.Close(s.homeFD)
		s.homeFD = -1
	}
}

// StartChild starts cmd like cmd.Start, but in the cgroup the runner was
// in before it entered its own (EnterRunnerCgroup), so that what the
// runner starts does not inherit the runner's CPU weight. Without a
// runner cgroup it is cmd.Start.
func StartChild(cmd *exec.Cmd) error {
	s := active.Load()
	if s == nil {
		return cmd.Start()
	}
	if s.v2 {
		s.intoHome(cmd)
		return cmd.Start()
	}
	// v1: the child is born in the cgroup of the thread that forks it.
	// This goroutine keeps its thread while the thread is home; the
	// thread goes back afterwards (it is not discarded: a child with
	// Pdeathsig is signalled when the thread that started it exits).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := strconv.Itoa(unix.Gettid())
	if err := writeCgroupFile(filepath.Join(s.home, "tasks"), tid); err != nil {
		if s.Warn != nil && s.warned.CompareAndSwap(false, true) {
			s.Warn(fmt.Errorf("a child of the runner starts in the runner's cgroup %s: %w", s.dir, err))
		}
		return cmd.Start()
	}
	err := cmd.Start()
	// Back with the others (if this fails the thread merely stays home,
	// at the default weight).
	_ = writeCgroupFile(filepath.Join(s.dir, "tasks"), tid)
	return err
}

// intoHome has cmd (v2) born in the home cgroup: CLONE_INTO_CGROUP.
func (s *SelfCgroup) intoHome(cmd *exec.Cmd) {
	attr := &syscall.SysProcAttr{}
	if cmd.SysProcAttr != nil {
		a := *cmd.SysProcAttr // the caller's may be shared
		attr = &a
	}
	if !attr.UseCgroupFD {
		attr.UseCgroupFD, attr.CgroupFD = true, s.homeFD
	}
	cmd.SysProcAttr = attr
}

// RunChild is cmd.Run with StartChild.
func RunChild(cmd *exec.Cmd) error {
	if err := StartChild(cmd); err != nil {
		return err
	}
	return cmd.Wait()
}
