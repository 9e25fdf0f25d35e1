package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

// session is one `cove up` with the four environments running and a
// terminal open in A.
type session struct {
	f       *fixture
	cv      *benchkit.Cove
	cgroups []string // of the environments (which is which does not matter: all are measured together, A by name)
	aCgroup string
	term    *terminal
}

// session starts cove up with args, the environments and a terminal in A,
// runs body and removes everything again.
func (f *fixture) session(ctx context.Context, name string, args []string, body func(*session) error) (retErr error) {
	var cl benchkit.Cleanups
	defer cl.Run()
	dir := filepath.Join(f.tmp, name)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	benchkit.Progress("starting cove up %s", strings.Join(args, " "))
	coveRunc := filepath.Join(f.runRoot, name+"-runc")
	cgParent := benchkit.DefaultCgroupParent() + "-" + name
	cl.Add(func() { benchkit.RemoveCgroups(cgParent) })
	cl.Add(func() { benchkit.DeleteContainers(f.o.runc, coveRunc) }) // after cove up stops
	cv, err := benchkit.StartCove(ctx, benchkit.CoveOptions{Bin: f.coveBin, Runc: f.o.runc, Dir: dir, RuncRoot: coveRunc,
		CgroupParent: cgParent, Args: args})
	if err != nil {
		return err
	}
	keepLog := ""
	if f.o.keepLog {
		keepLog = "bench-interactive-" + name + ".log"
	}
	cl.Add(cv.StopFunc(&retErr, keepLog))
	if f.o.shield > 0 {
		if err := setWeight("/"+cgParent, f.o.shield); err != nil {
			return err
		}
	}
	envs, err := benchkit.NewEnvs(ctx, cv, f.repo, f.imageRef)
	if err != nil {
		return err
	}
	cl.Add(envs.Close)
	s := &session{f: f, cv: cv}
	for _, n := range envNames {
		id, _, err := envs.Create(ctx, n, "")
		if err != nil {
			return err
		}
		if _, err := envs.WaitRunning(ctx, id, 5*time.Minute); err != nil {
			return err
		}
		cg := "/" + cgParent + "/" + id
		if _, err := benchkit.CgroupCPU(cg); err != nil {
			return fmt.Errorf("environment %s's cgroup: %w", n, err)
		}
		s.cgroups = append(s.cgroups, cg)
		if n == envNames[0] {
			s.aCgroup = cg
		}
	}
	config := filepath.Join(dir, "ssh_config")
	if _, err := cv.CLI(ctx, "config-ssh", "--ssh-config", config); err != nil {
		return err
	}
	benchkit.Progress("opening a terminal in %s with OpenSSH", envNames[0])
	if s.term, err = openTerminal(ctx, cv.Env(), config, envNames[0]+".cove"); err != nil {
		return err
	}
	cl.Add(s.term.close)
	f.coveCgroups = append(f.coveCgroups, name+": "+cpuCgroupOf(cv.Pid()))
	return body(s)
}

// classCPUs reads the CPUs cove's static quota gives A.
func (s *session) classCPUs() (float64, error) {
	q, err := benchkit.CPUQuota(s.aCgroup)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(q) // v1: "100000"; v2: "100000 100000"
	if len(f) == 0 || f[0] == "-1" || f[0] == "max" {
		return 0, fmt.Errorf("environment %s has no CPU quota (%q): start cove without the CPU control loop", envNames[0], q)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("quota %q: %w", q, err)
	}
	return v / 100000, nil
}

// spinScript starts the load: n busy loops, each in a session of its own
// so that it outlives the command that started it, each writing its pid
// to /tmp/cove-bench-spin; it returns once all n have.
func spinScript(n int) string {
	return fmt.Sprintf(`rm -f /tmp/cove-bench-spin; i=0; while [ $i -lt %[1]d ]; do `+
		`setsid sh -c 'echo $$ >> /tmp/cove-bench-spin; while :; do :; done' </dev/null >/dev/null 2>&1 & i=$((i+1)); done; `+
		`n=0; until [ -f /tmp/cove-bench-spin ] && [ $(wc -l < /tmp/cove-bench-spin) -ge %[1]d ]; do `+
		`n=$((n+1)); [ $n -gt 600 ] && { echo "the spinners did not start" >&2; exit 1; }; sleep 0.1; done`, n)
}

// stopScript kills the spinners and waits until they are gone.
const stopScript = `[ -f /tmp/cove-bench-spin ] || exit 0; for p in $(cat /tmp/cove-bench-spin); do kill -9 $p 2>/dev/null; done; ` +
	`for p in $(cat /tmp/cove-bench-spin); do n=0; while kill -0 $p 2>/dev/null; do ` +
	`n=$((n+1)); [ $n -gt 100 ] && { echo "spinner $p is left" >&2; exit 1; }; sleep 0.1; done; done; rm -f /tmp/cove-bench-spin`

// measure types the keystrokes into A while the first loaded environments
// each run the spinners.
func (s *session) measure(ctx context.Context, policy, load string, loaded int) (m measurement, err error) {
	m = measurement{policy: policy, load: load}
	for _, n := range envNames[:loaded] {
		if _, err := s.cv.CLI(ctx, "ssh", n, "--", spinScript(s.f.o.spinners)); err != nil {
			return m, fmt.Errorf("start the load in %s: %w", n, err)
		}
	}
	defer func() {
		for _, n := range envNames[:loaded] {
			// A fresh context: the load stops also on interrupt (and
			// with the environments anyway).
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			if _, serr := s.cv.CLI(sctx, "ssh", n, "--", stopScript); serr != nil {
				err = errors.Join(err, fmt.Errorf("stop the load in %s: %w", n, serr))
			}
			cancel()
		}
	}()
	if loaded > 0 {
		if err := pause(ctx, s.f.o.settle); err != nil {
			return m, err
		}
	}
	benchkit.Progress("%s, %s: typing %d keystrokes", policy, load, s.f.o.keys)
	cpu0, a0, err := s.cpu()
	if err != nil {
		return m, err
	}
	thr0, err := throttled(s.aCgroup)
	if err != nil {
		return m, err
	}
	pids := s.pathPids()
	t0 := time.Now()
	if m.by, err = s.typeAll(ctx, pids); err != nil {
		return m, err
	}
	wall := time.Since(t0)
	cpu1, a1, err := s.cpu()
	if err != nil {
		return m, err
	}
	thr1, err := throttled(s.aCgroup)
	if err != nil {
		return m, err
	}
	m.cpus, m.aCPUs = float64(cpu1-cpu0)/float64(wall), float64(a1-a0)/float64(wall)
	m.aThrottled = float64(thr1-thr0) / (float64(wall) / float64(100*time.Millisecond))
	return m, nil
}

// typeAll types the keystrokes with the client in each placement asked
// for: with two, in four blocks (laptop, host, host, laptop), each half
// the keystrokes, so that both see the same load on average. The client
// is back on the host's side when it returns.
func (s *session) typeAll(ctx context.Context, pids map[string][]int) (by map[string]*sample, err error) {
	client := append(append([]int{}, pids["ssh client"]...), pids["ProxyCommand"]...)
	defer func() {
		if perr := s.f.client.place(clientHost, client); perr != nil {
			err = errors.Join(err, perr)
		}
	}()
	blocks := []string{s.f.modes[0]}
	n := s.f.o.keys
	if len(s.f.modes) == 2 {
		a, b := s.f.modes[0], s.f.modes[1]
		blocks = []string{a, b, b, a}
		n = max(s.f.o.keys/2, 1)
	}
	by = map[string]*sample{}
	for _, mode := range blocks {
		if err := s.f.client.place(mode, client); err != nil {
			return nil, err
		}
		w0 := waits(pids)
		lat, err := s.term.keystrokes(ctx, n, s.f.o.gap)
		if err != nil {
			return nil, fmt.Errorf("client on the %s: %w", mode, err)
		}
		smp := by[mode]
		if smp == nil {
			smp = &sample{waits: map[string]time.Duration{}}
			by[mode] = smp
		}
		smp.lat = append(smp.lat, lat...)
		for role, w := range waits(pids) {
			smp.waits[role] += w - w0[role]
		}
	}
	return by, nil
}

// throttled is the number of CFS periods in which cgroup p itself (where
// A's shell and agent are, whatever the policy) was throttled: nr_throttled
// of its cpu.stat, not its sub-groups'.
func throttled(p string) (uint64, error) {
	name := filepath.Join("/sys/fs/cgroup/cpu", p, "cpu.stat")
	if benchkit.CgroupV2() {
		name = filepath.Join("/sys/fs/cgroup", p, "cpu.stat")
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "nr_throttled "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no nr_throttled", name)
}

// cpu is the CPU time used so far by all environments and by A.
func (s *session) cpu() (all, a time.Duration, err error) {
	for _, cg := range s.cgroups {
		d, err := benchkit.CgroupCPU(cg)
		if err != nil {
			return 0, 0, err
		}
		all += d
		if cg == s.aCgroup {
			a = d
		}
	}
	return all, a, nil
}
