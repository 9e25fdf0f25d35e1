package container

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/covedev/cove/internal/testutil"
)

// TestJoinsPreparedNetNS: with Spec.NetNSPath the environment joins that
// network namespace (the runner's networking prepares it) instead of a new
// one, and still starts (sysfs is bound read-only instead of mounted).
func TestJoinsPreparedNetNS(t *testing.T) {
	h := newTestHost(t)
	testutil.RequireTool(t, "ip") // to prepare a network namespace
	name := fmt.Sprintf("cove-rt-%d", rand.IntN(1_000_000))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "add", "covetest0", "type", "veth", "peer", "name", "covetest1").CombinedOutput(); err != nil {
		t.Fatalf("add dummy link: %v %s", err, out)
	}
	rt := h.runtime(t)
	spec := h.spec(t, "netns")
	spec.NetNSPath = filepath.Join("/run/netns", name)
	st := startSpec(t, rt, spec)
	inside, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var want string
	if fi, err := os.Stat(spec.NetNSPath); err == nil {
		want = fmt.Sprintf("net:[%d]", inode(fi))
	}
	if inside != want {
		t.Fatalf("environment net ns %s, want the prepared %s", inside, want)
	}
	// Read through /proc from the host: `runc exec` (not used by cove: the
	// agent starts sessions itself) cannot join a network namespace owned by
	// the host's user namespace.
	dev, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", st.Pid))
	if err != nil || !strings.Contains(string(dev), "covetest0") {
		t.Fatalf("prepared interface not visible inside (%v):\n%s", err, dev)
	}
	mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	// /sys and every host mount that came along below it (cgroup
	// hierarchies here; debugfs, securityfs, bpffs... elsewhere) must be
	// read-only (S8 of the 2026-12 review).
	sysMounts := 0
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) <= 5 || (f[4] != "/sys" && !strings.HasPrefix(f[4], "/sys/")) {
			continue
		}
		sysMounts++
		if _, after, _ := strings.Cut(line, " - "); strings.HasPrefix(after, "tmpfs ") {
			continue // runc's own scratch for the cgroup v1 hierarchies, not the host's
		}
		if !slices.Contains(strings.Split(f[5], ","), "ro") {
			t.Errorf("%s is writable inside (%s)\n%s", f[4], f[5], line)
		}
	}
	if sysMounts == 0 {
		t.Fatalf("no /sys mount inside:\n%s", mounts)
	}
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
