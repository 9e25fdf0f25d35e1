package cpucontrol

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/procgroups"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/testutil"
)

// ownThrottled is the number of periods in which cgroup p itself (not the
// cgroups below it) was throttled.
func ownThrottled(t *testing.T, p string) uint64 {
	t.Helper()
	dir := filepath.Join("/sys/fs/cgroup/cpu", p)
	if cgroups.Mode() == cgroups.Unified {
		dir = filepath.Join("/sys/fs/cgroup", p)
	}
	f, err := os.Open(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "nr_throttled "); ok {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("%s/cpu.stat: no nr_throttled", dir)
	return 0
}

// groupedEnv makes an environment's cgroup below a parent of its own with
// the process groups below it, and n spinning processes in group g;
// everything is removed at the end, processes first.
func groupedEnv(t *testing.T, g procgroups.Group, n int) (env string, files *resources.CPUFiles, groups *procgroups.Files) {
	t.Helper()
	testutil.RequireRoot(t, "to create cgroups")
	if cgroups.Mode() == cgroups.Unavailable {
		t.Skip("no cgroup hierarchy mounted")
	}
	parent := fmt.Sprintf("cove-cputest-%d", rand.Uint32())
	env = resources.CgroupPath(parent, "env")
	var err error
	if files, err = resources.HostCPUFiles(); err != nil {
		t.Fatal(err)
	}
	if groups, err = procgroups.HostFiles(); err != nil {
		t.Fatal(err)
	}
	var spinners []*exec.Cmd
	t.Cleanup(func() {
		for _, s := range spinners {
			_ = s.Process.Kill()
			_ = s.Wait()
		}
		if cgroups.Mode() != cgroups.Unified { // v2: resources.Remove removes what is below
			for _, gr := range procgroups.Groups {
				if err := os.Remove(filepath.Join("/sys/fs/cgroup/cpu", env, string(gr))); err != nil && !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("cleanup: %v", err)
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer cancel()
		if err := resources.Remove(ctx, env); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := resources.Remove(ctx, "/"+parent); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := resources.Create(env, resources.Limits{CPUMillis: 1000}); err != nil {
		t.Fatal(err)
	}
	for range n {
		s := exec.Command("sh", "-c", "while :; do :; done")
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		spinners = append(spinners, s)
		for _, d := range memberDirs(env) { // the environment's cgroup in every hierarchy, as runc puts it
			if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(s.Process.Pid)), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := groups.Setup(env); err != nil {
		t.Fatal(err)
	}
	for _, s := range spinners {
		if err := groups.Move(env, g, s.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}
	return env, files, groups
}

// TestWorkloadQuotaLeavesTerminalsUnthrottled performs what made a
// keystroke wait up to a CFS period: the environment's workload group
// spins on every CPU and uses its quota up. With the quota on the whole
// environment, the kernel throttles the environment's cgroup, and with it
// the agent and the terminals. With the quota on the workload group and
// the reserve on the environment's cgroup, the workload group is
// throttled again and again while the environment's cgroup (the agent's
// and the terminals' CPU) never is. Raising and lowering the split also
// passes the kernel's checks (v1 refuses a child's quota above its
// parent's).
func TestWorkloadQuotaLeavesTerminalsUnthrottled(t *testing.T) {
	env, files, _ := groupedEnv(t, procgroups.Workload, 4)
	workload := env + "/" + string(procgroups.Workload)

	// Before: 0.3 CPU on the whole environment.
	if err := files.Set(env, resources.CPULimits{QuotaMillis: 300}); err != nil {
		t.Fatal(err)
	}
	before := ownThrottled(t, env)
	testutil.WaitFor(t, "the environment's cgroup to be throttled by its own workload", func() bool {
		return ownThrottled(t, env) >= before+3
	})

	// The split, raised and lowered through the kernel's checks, ending
	// at 0.1 CPU for the workload and 0.3 for the environment.
	for _, l := range []resources.CPULimits{
		{QuotaMillis: 1200, Workload: "workload", WorkloadQuotaMillis: 1000},
		{QuotaMillis: 2000, Workload: "workload", WorkloadQuotaMillis: 1800},
		{QuotaMillis: 300, Workload: "workload", WorkloadQuotaMillis: 100},
	} {
		if err := files.Set(env, l); err != nil {
			t.Fatalf("%+v: %v", l, err)
		}
		if q, w := quotaMicros(t, env), quotaMicros(t, workload); q != l.QuotaMillis*100 || w != l.WorkloadQuotaMillis*100 {
			t.Fatalf("%+v: quotas %d and %d µs", l, q, w)
		}
	}
	envBefore, workBefore := ownThrottled(t, env), ownThrottled(t, workload)
	testutil.WaitFor(t, "the workload group to be throttled 20 times", func() bool {
		return ownThrottled(t, workload) >= workBefore+20
	})
	// The kernel hands quota out in slices (5 ms) per CPU, so a parent
	// whose child spins on every CPU can find its own pool empty in the odd
	// period (about 1% measured; cpu.cfs_burst_us would absorb it): a
	// tenth of the workload's throttles is the bound, where the quota on
	// the whole environment throttled it in every period the workload was.
	workN := ownThrottled(t, workload) - workBefore
	if n := ownThrottled(t, env) - envBefore; n > workN/10 {
		t.Errorf("the environment's cgroup was throttled %d times while only its workload spun (throttled %d times)", n, workN)
	}
}

// TestInteractiveCannotEscapeQuota performs what root inside an
// environment could do to escape the workload's quota: spin in the
// agent's or the terminals' group (inject code into PID 1, or keep a
// terminal's job from being demoted). The environment's cgroup still
// bounds them: over a measured window the environment uses no more than
// its quota.
func TestInteractiveCannotEscapeQuota(t *testing.T) {
	env, files, groups := groupedEnv(t, procgroups.Agent, 2)
	// Two more spinners in workload.
	for range 2 {
		s := exec.Command("sh", "-c", "while :; do :; done")
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Process.Kill(); _ = s.Wait() })
		for _, d := range memberDirs(env) {
			if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(s.Process.Pid)), 0); err != nil {
				t.Fatal(err)
			}
		}
		if err := groups.Move(env, procgroups.Workload, s.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}
	const quota, work = 300, 100
	if err := files.Set(env, resources.CPULimits{QuotaMillis: quota, Workload: "workload", WorkloadQuotaMillis: work}); err != nil {
		t.Fatal(err)
	}
	first, err := files.Read(env)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// At least 2 s of wall time and the environment throttled: the
	// spinners did use what they could.
	testutil.WaitFor(t, "2 s of spinning and the environment's cgroup throttled", func() bool {
		return time.Since(start) > 2*time.Second && ownThrottled(t, env) > 0
	})
	last, err := files.Read(env)
	wall := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	used := last.Usage - first.Usage
	// The kernel's bound: the quota in every period of the window, and
	// a period more at either end (the window is not aligned on periods).
	limit := time.Duration(quota) * (wall + 200*time.Millisecond) / 1000
	if used > limit {
		t.Errorf("the environment used %v in %v: more than its quota of %d millis allows (%v)", used, wall, quota, limit)
	}
	t.Logf("used %v of at most %v in %v", used, limit, wall)
}
