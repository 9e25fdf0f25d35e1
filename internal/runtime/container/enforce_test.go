package container

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/testutil"
)

// Limits enforced for real on runc containers: a fork bomb, a memory hog
// and a direct-IO writer, each against its class limit.

// addApplets links more busybox applets into spec's root file system.
func addApplets(t *testing.T, spec runtime.Spec, names ...string) {
	t.Helper()
	for _, a := range names {
		p := filepath.Join(spec.Rootfs, "bin", a)
		if err := os.Symlink("busybox", p); err != nil && !errors.Is(err, os.ErrExist) {
			t.Fatal(err)
		}
		if err := os.Lchown(p, int(spec.IDMap.HostID), int(spec.IDMap.HostID)); err != nil {
			t.Fatal(err)
		}
	}
}

// cgroupFile is file of controller (v1) in container id's cgroup.
func (h *testHost) cgroupFile(t *testing.T, controller, id, file string) string {
	t.Helper()
	cg := resources.CgroupPath(h.cgroupParent, id)
	p := filepath.Join("/sys/fs/cgroup", cg, file)
	if cgroups.Mode() != cgroups.Unified {
		p = filepath.Join("/sys/fs/cgroup", controller, cg, file)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// counter is the value of key in a flat-keyed cgroup file ("max 3").
func counter(t *testing.T, content, key string) int64 {
	t.Helper()
	for _, l := range strings.Split(content, "\n") {
		if v, ok := strings.CutPrefix(l, key+" "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("%s in %q: %v", key, content, err)
			}
			return n
		}
	}
	return 0
}

// session is a shell inside a container, started before the trouble like
// a user's SSH session: commands go to its stdin, lines come back.
type session struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
}

func (h *testHost) session(t *testing.T, id string) *session {
	t.Helper()
	cmd := exec.Command("runc", "--root", h.root, "exec", id, "sh")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &session{cmd: cmd, in: in, lines: make(chan string, 64)}
	go func() {
		defer close(s.lines)
		for sc := bufio.NewScanner(out); sc.Scan(); {
			s.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		// End of input ends the shell and runc exec with it; killing runc
		// exec instead would leave the shell behind in the container.
		_ = in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(testutil.Patience(t)):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return s
}

// run sends script and returns the lines it printed before marker.
func (s *session) run(t *testing.T, script string) []string {
	t.Helper()
	const marker = "--cove-test-done--"
	if _, err := fmt.Fprintf(s.in, "%s\necho %s\n", script, marker); err != nil {
		t.Fatalf("session: %v", err)
	}
	var got []string
	timeout := time.After(testutil.Patience(t))
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				t.Fatalf("session ended running %q; printed %q", script, got)
			}
			if l == marker {
				return got
			}
			got = append(got, l)
		case <-timeout:
			t.Fatalf("session: no end of %q; printed %q", script, got)
		}
	}
}

// TestForkBombStopsAtPidsMax: a fork bomb in an environment stops at its
// pids limit; a neighbour and the host can still start processes, the
// environment's PID 1 (the agent) and an open session survive, and once
// the bomb is killed from that session the environment runs new commands.
func TestForkBombStopsAtPidsMax(t *testing.T) {
	h := newTestHost(t)
	rt := h.runtime(t)
	const limit = 64
	spec := h.spec(t, "bomb")
	addApplets(t, spec, "setsid", "kill")
	spec.Resources = runtime.Resources{MemoryBytes: 512 << 20, Pids: limit}
	startSpec(t, rt, spec)
	neighbour := h.spec(t, "neighbour")
	neighbour.Resources = runtime.Resources{MemoryBytes: 256 << 20, Pids: limit}
	startSpec(t, rt, neighbour)

	sess := h.session(t, spec.ID)
	// The classic bomb, in a process group of its own so that the session
	// can kill it with a builtin (no fork needed).
	pg := sess.run(t, `setsid sh -c 'f() { f | f & }; f' >/dev/null 2>&1 & echo $!`)
	if len(pg) != 1 {
		t.Fatalf("bomb's process group: %q", pg)
	}
	t.Cleanup(func() { _, _ = h.exec(t, spec.ID, "kill", "-9", "-"+pg[0]) })
	testutil.WaitFor(t, "the bomb to reach pids.max", func() bool {
		return counter(t, h.cgroupFile(t, "pids", spec.ID, "pids.events"), "max") > 0
	})
	cur, err := strconv.Atoi(strings.TrimSpace(h.cgroupFile(t, "pids", spec.ID, "pids.current")))
	if err != nil || cur > limit {
		t.Errorf("pids.current = %d, %v; the limit is %d", cur, err, limit)
	}
	// The victims: a neighbour and the host still fork.
	if out := h.mustExec(t, neighbour.ID, "sh", "-c", "echo $((6*7)) | cat"); out != "42" {
		t.Errorf("neighbour during the bomb: %q", out)
	}
	if out, err := exec.Command("sh", "-c", "echo host | cat").Output(); err != nil || strings.TrimSpace(string(out)) != "host" {
		t.Errorf("host during the bomb: %q, %v", out, err)
	}

	// The session kills the bomb with builtins until nothing of it is left.
	sess.run(t, `while kill -9 -`+pg[0]+` 2>/dev/null; do :; done`)
	if out := h.mustExec(t, spec.ID, "sh", "-c", "echo usable | cat"); out != "usable" {
		t.Errorf("environment after the bomb: %q", out)
	}
	if got := sess.run(t, "echo still here"); len(got) != 1 || got[0] != "still here" {
		t.Errorf("session after the bomb: %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	if st, err := rt.State(ctx, spec.ID); err != nil || st.Status != runtime.StatusRunning {
		t.Errorf("PID 1 after the bomb: %+v, %v", st, err)
	}
}

// TestMemoryHogOOMKilledInside: a process allocating beyond the
// environment's memory limit is OOM-killed inside it; PID 1 (the agent)
// and a session opened before survive, the kill is counted in the cgroup,
// and the environment runs new commands.
func TestMemoryHogOOMKilledInside(t *testing.T) {
	h := newTestHost(t)
	rt := h.runtime(t)
	spec := h.spec(t, "hog")
	addApplets(t, spec, "dd")
	const limit = 64 << 20
	spec.Resources = runtime.Resources{MemoryBytes: limit, Pids: 256, SwapBytes: runtime.NoSwap}
	startSpec(t, rt, spec)
	sess := h.session(t, spec.ID)
	// Other tests' kills are skipped.
	cg := resources.CgroupPath(h.cgroupParent, spec.ID)
	kills := make(chan resources.OOMKill, 16)
	w, err := resources.OpenOOMKills()
	if err != nil {
		t.Fatal(err)
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan error, 1)
	go func() {
		watched <- w.Watch(watchCtx, func(k resources.OOMKill) {
			if k.Cgroup == cg {
				kills <- k
			}
		})
	}()
	t.Cleanup(func() {
		stopWatch()
		if err := <-watched; err != nil {
			t.Errorf("watch OOM kills: %v", err)
		}
	})

	// dd holds one block of bs bytes in memory: twice the limit.
	out, err := h.exec(t, spec.ID, "dd", "if=/dev/zero", "of=/dev/null", fmt.Sprintf("bs=%d", 2*limit), "count=4")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 128+9 {
		t.Errorf("hog: %v (%s), want killed by SIGKILL (exit 137)", err, out)
	}
	if out, err := h.exec(t, spec.ID, "true"); err != nil {
		t.Errorf("environment after the hog: %v: %s", err, out)
	}
	mem := h.cgroupFile(t, "memory", spec.ID, "memory.oom_control")
	if cgroups.Mode() == cgroups.Unified {
		mem = h.cgroupFile(t, "memory", spec.ID, "memory.events")
	}
	if n := counter(t, mem, "oom_kill"); n < 1 {
		t.Errorf("no OOM kill counted in the environment's cgroup: %q", mem)
	}
	// The kernel log names the killed process and the environment's
	// cgroup, for the runner to report.
	if k := testutil.Receive(t, kills, "the OOM kill in the kernel log"); k.Task != "dd" {
		t.Errorf("killed: %+v, want dd", k)
	}
	if n, err := resources.MemoryLimit(cg); err != nil || n != limit {
		t.Errorf("memory limit of %s = %d, %v; want %d", cg, n, err, limit)
	}
	if got := sess.run(t, "echo alive"); len(got) != 1 || got[0] != "alive" {
		t.Errorf("session after the hog: %q", got)
	}
	if out := h.mustExec(t, spec.ID, "echo", "usable"); out != "usable" {
		t.Errorf("environment after the hog: %q", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	if st, err := rt.State(ctx, spec.ID); err != nil || st.Status != runtime.StatusRunning {
		t.Errorf("PID 1 after the hog: %+v, %v", st, err)
	}
}

// TestIOLimitDirectIO: an environment writing with direct IO to its
// workspace's disk cannot exceed its class's write bandwidth. A limit can
// only slow the writer, so "at most 1.5 × the limit" holds however loaded
// the host is; the cgroup's own IO counters show the bytes went to the
// throttled disk (not a cache), so the bound is not met vacuously.
func TestIOLimitDirectIO(t *testing.T) {
	h := newTestHost(t)
	rt := h.runtime(t)
	spec := h.spec(t, "io")
	addApplets(t, spec, "dd")
	ws := t.TempDir()
	makeTraversable(t, ws)
	if err := os.Chown(ws, int(spec.IDMap.HostID), int(spec.IDMap.HostID)); err != nil {
		t.Fatal(err)
	}
	maj, min, err := resources.BlockDevice(ws)
	if err != nil {
		t.Skipf("workspace not on a block device: %v", err)
	}
	const (
		limit = 4 << 20 // bytes/s
		total = 16 << 20
	)
	spec.Mounts = []runtime.Mount{{Source: ws, Destination: "/workspace", Type: "bind", Options: []string{"rbind"}}}
	spec.Resources = runtime.Resources{MemoryBytes: 256 << 20, Pids: 256,
		IO: []runtime.DeviceIO{{Major: maj, Minor: min, WriteBPS: limit}}}
	startSpec(t, rt, spec)

	start := time.Now()
	out, err := h.exec(t, spec.ID, "dd", "if=/dev/zero", "of=/workspace/f", "bs=1048576", fmt.Sprintf("count=%d", total>>20), "oflag=direct")
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("dd: %v: %s", err, out)
	}
	if rate := float64(total) / elapsed.Seconds(); rate > 1.5*limit {
		t.Errorf("wrote %d bytes at %.0f bytes/s, over 1.5 × the %d bytes/s limit", total, rate, limit)
	} else {
		t.Logf("wrote %d bytes at %.0f bytes/s (limit %d)", total, rate, limit)
	}
	stats := h.cgroupFile(t, "blkio", spec.ID, "blkio.throttle.io_service_bytes")
	key := fmt.Sprintf("%d:%d Write", maj, min)
	if cgroups.Mode() == cgroups.Unified {
		stats = h.cgroupFile(t, "io", spec.ID, "io.stat")
		key = ""
	}
	if key != "" {
		if n := counter(t, stats, key); n < total {
			t.Errorf("throttled disk saw %d bytes written, want at least %d: %q", n, total, stats)
		}
	}
}
