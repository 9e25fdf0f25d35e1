package runner

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/testutil"
)

// TestRunnerEntersOwnCgroup: at start the runner moves into
// <parent>.runner with its weight; its leave (at stop) puts it back and
// removes the cgroup; a second leave does nothing. With the weight 0, or no cgroup
// parent, it stays where it is. A weight the kernel cannot take is a
// warning that says what is allowed, and the runner runs on.
func TestRunnerEntersOwnCgroup(t *testing.T) {
	testutil.RequireRoot(t, "to create cgroups")
	if cgroups.Mode() != cgroups.Legacy && cgroups.Mode() != cgroups.Hybrid {
		t.Skip("this test uses the real v1 cpu hierarchy (v2 is resources' TestRunnerCgroupV2Fake)")
	}
	parent := fmt.Sprintf("cove-selftest-%d", rand.Uint32())
	dir := filepath.Join("/sys/fs/cgroup/cpu", resources.RunnerCgroupPath(parent))
	t.Cleanup(func() { _ = os.Remove(dir) })
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	home, _ := os.ReadFile("/proc/self/cgroup")

	for _, cfg := range []Config{{CgroupParent: parent}, {RunnerCPUWeight: 1000}} {
		r := &Runner{cfg: cfg, log: log}
		r.enterSelfCgroup()()
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%+v: runner cgroup made: %v", cfg, err)
		}
	}

	r := &Runner{cfg: Config{CgroupParent: parent, RunnerCPUWeight: 1000}, log: log}
	leave := r.enterSelfCgroup()
	b, _ := os.ReadFile("/proc/self/cgroup")
	if !strings.Contains(string(b), ":cpu:/"+parent+".runner\n") {
		leave()
		t.Fatalf("not in the runner cgroup: %s", b)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "cpu.shares")); strings.TrimSpace(string(got)) != "10240" {
		t.Errorf("cpu.shares %q", got)
	}
	leave()
	leave()
	if b, _ := os.ReadFile("/proc/self/cgroup"); !bytes.Equal(b, home) {
		t.Errorf("after leave: %s, was %s", b, home)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the runner cgroup after leave: %v", err)
	}

	logs.Reset()
	r = &Runner{cfg: Config{CgroupParent: parent, RunnerCPUWeight: 20000}, log: log}
	r.enterSelfCgroup()()
	if !strings.Contains(logs.String(), "1 to 10000") {
		t.Errorf("weight 20000: log %q", logs.String())
	}
}
