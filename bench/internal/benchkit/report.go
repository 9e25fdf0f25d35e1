package benchkit

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Percentile is the nearest-rank p-th percentile (0 < p ≤ 100) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// Ms formats d in milliseconds, right-aligned.
func Ms(d time.Duration) string {
	return fmt.Sprintf("%7.1f ms", float64(d)/float64(time.Millisecond))
}

// Machine describes where the figures were measured.
type Machine struct {
	When                   time.Time
	CPUs                   int
	CPUModel, Kernel, Runc string
	Cgroups                string
	LoadStart, LoadEnd     string // 1, 5 and 15 minute load averages
}

// MachineInfo describes this machine now.
func MachineInfo(ctx context.Context, runc string) Machine {
	m := Machine{When: time.Now(), CPUs: runtime.NumCPU(), CPUModel: "unknown", Kernel: "unknown", Runc: "unknown", Cgroups: "v1", LoadStart: LoadAvg()}
	if CgroupV2() {
		m.Cgroups = "v2"
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if out, err := exec.CommandContext(ctx, runc, "--version").Output(); err == nil {
		m.Runc = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// LoadAvg is the 1, 5 and 15 minute load averages.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// Workdir makes the bench's private directories: tmp under /var/tmp (o+x,
// so the environments' unprivileged host uids can traverse to their bind
// mounts) and runRoot under /run for runc state. Both are removed by cl.
func Workdir(cl *Cleanups) (tmp, runRoot string, err error) {
	tmp, err = os.MkdirTemp("/var/tmp", "cove-bench-")
	if err != nil {
		return "", "", err
	}
	cl.Add(func() { RemoveTree(tmp) })
	if err := os.Chmod(tmp, 0o711); err != nil {
		return "", "", err
	}
	runRoot = fmt.Sprintf("/run/cove-bench-%d", os.Getpid())
	if err := os.MkdirAll(runRoot, 0o700); err != nil {
		return "", "", err
	}
	cl.Add(func() { RemoveTree(runRoot) })
	return tmp, runRoot, nil
}
