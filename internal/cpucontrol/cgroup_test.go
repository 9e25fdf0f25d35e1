package cpucontrol

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/testutil"
)

// quotaFile is the file holding the CFS quota of cgroup p on this host.
func quotaFile(p string) string {
	if cgroups.Mode() == cgroups.Unified {
		return filepath.Join("/sys/fs/cgroup", p, "cpu.max")
	}
	return filepath.Join("/sys/fs/cgroup/cpu", p, "cpu.cfs_quota_us")
}

// quotaMicros reads the quota of cgroup p (-1: unlimited).
func quotaMicros(t *testing.T, p string) int64 {
	t.Helper()
	b, err := os.ReadFile(quotaFile(p))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 || f[0] == "max" {
		return -1
	}
	q, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// memberDirs are the directories of the member cgroup p (below an
// environment's cgroup made by resources.Create) in the hierarchies the
// loop uses.
func memberDirs(p string) []string {
	if cgroups.Mode() == cgroups.Unified {
		return []string{filepath.Join("/sys/fs/cgroup", p)}
	}
	return []string{filepath.Join("/sys/fs/cgroup/cpu", p), filepath.Join("/sys/fs/cgroup/cpuacct", p)}
}

// TestLoopGivesBusyCgroupMoreQuota runs the loop on a real cgroup laid out
// as a Compose environment's (the environment's cgroup made with its
// class's quota, a member below it with the same quota of its own, a
// process spinning in the member): once the kernel has throttled it, the
// loop raises the quota of both, as the cgroup files show.
func TestLoopGivesBusyCgroupMoreQuota(t *testing.T) {
	testutil.RequireRoot(t, "to create cgroups")
	if cgroups.Mode() == cgroups.Unavailable {
		t.Skip("no cgroup hierarchy mounted")
	}
	const guarantee = 200 // a fifth of a CPU: a spinning shell is throttled at once
	parent := fmt.Sprintf("cove-cputest-%d", rand.Uint32())
	env := resources.CgroupPath(parent, "env")
	member := env + "/env-svc"
	t.Cleanup(func() {
		for _, d := range memberDirs(member) {
			if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("cleanup: %v", err)
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
	if err := resources.Create(env, resources.Limits{CPUMillis: guarantee}); err != nil {
		t.Fatal(err)
	}
	for _, d := range memberDirs(member) {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	quota := strconv.Itoa(guarantee * resources.CPUPeriod / 1000)
	if cgroups.Mode() == cgroups.Unified {
		quota += " " + strconv.Itoa(resources.CPUPeriod)
	}
	if err := os.WriteFile(quotaFile(member), []byte(quota), 0); err != nil {
		t.Fatal(err)
	}

	spin := exec.Command("sh", "-c", "while :; do :; done")
	if err := spin.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = spin.Wait(); close(exited) }()
	t.Cleanup(func() { _ = spin.Process.Kill(); <-exited }) // before the cgroups are removed
	for _, d := range memberDirs(member) {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(spin.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
	}

	files, err := resources.HostCPUFiles()
	if err != nil {
		t.Fatal(err)
	}
	capacity := int64(goruntime.NumCPU()) * 1000
	l := &Loop{Controller: New(Params{Capacity: capacity, MinQuota: guarantee}), Cgroups: files,
		Envs: func() []Env { return []Env{{ID: "env", Cgroup: env, Guarantee: guarantee}} }}
	ctx := context.Background()
	res := l.Tick(ctx)
	if d := res.Decisions[0]; d.Quota != guarantee || d.Burst {
		t.Fatalf("first tick: %+v; want its guarantee", d)
	}
	base := int64(guarantee * resources.CPUPeriod / 1000)
	if q := quotaMicros(t, env); q != base {
		t.Fatalf("environment's quota %d after the first tick, want %d", q, base)
	}
	first, err := files.Read(env)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the kernel to throttle the spinning process", func() bool {
		st, err := files.Read(env)
		return err == nil && st.NrThrottled > first.NrThrottled && st.Usage > first.Usage
	})
	res = l.Tick(ctx)
	d := res.Decisions[0]
	if !d.Throttled || !d.Burst || d.Quota <= guarantee {
		t.Fatalf("after throttling: %+v; want a burst above %d", d, guarantee)
	}
	want := d.Quota * resources.CPUPeriod / 1000
	if q := quotaMicros(t, env); q != want {
		t.Errorf("environment's quota %d µs, want the loop's %d", q, want)
	}
	if q := quotaMicros(t, member); q != want {
		t.Errorf("member's quota %d µs, want the environment's %d", q, want)
	}
	t.Logf("quota raised from %d to %d µs per %d µs (usage %d millis, spare %d)", base, want, resources.CPUPeriod, d.Usage, res.Spare)

	// Stopped, the loop puts the class's quota back: lower than the
	// member's, which the kernel (v1) refuses unless the member goes first.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	l.Run(cctx, DefaultInterval)
	if q := quotaMicros(t, env); q != base {
		t.Errorf("environment's quota %d after the loop stopped, want the class's %d", q, base)
	}
	if q := quotaMicros(t, member); q != base {
		t.Errorf("member's quota %d after the loop stopped, want %d", q, base)
	}
}
