// Package e2e drives the real cove binary as a user would: `cove up`, the
// CLI, the real OpenSSH client, runc, git. It needs root and those tools;
// without them it skips with the reason (CI installs them).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	"github.com/covedev/cove/internal/testutil/testimage"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// requireTools skips unless the test can run for real.
func requireTools(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "user namespaces, mounts, cgroups")
	testutil.RequireTool(t, "runc", "git", "ssh", "scp", "sftp", "rsync", "mmdebstrap", "ip", "nft")
}

// buildCove builds the static binary once per test binary run.
func buildCove(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("COVE_BINARY"); p != "" {
		return p
	}
	out := filepath.Join(os.TempDir(), fmt.Sprintf("cove-e2e-%d", os.Getpid()))
	if _, err := os.Stat(out); err == nil {
		return out
	}
	cmd := exec.Command("go", "build", "-o", out, "./cmd/cove")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build cove: %v\n%s", err, b)
	}
	return out
}

// images serves the busybox and Debian test images from an in-process
// registry and returns its host:port.
func images(t *testing.T) string { return imagesWith(t, nil) }

// imagesWith also serves extra artifacts (e.g. features).
func imagesWith(t *testing.T, extra map[string]v1.Image) string {
	t.Helper()
	bb, err := testimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	deb, err := testimage.Debian(ctx, t.Logf)
	if err != nil {
		t.Fatalf("debian test image: %v", err)
	}
	all := map[string]v1.Image{"test/busybox:latest": bb, "test/debian:latest": deb}
	for k, v := range extra {
		all[k] = v
	}
	return testimage.Serve(t, all)
}

// freePort returns a loopback address for a cove daemon or a tool to
// listen on (testutil.FreePort: a port no other test is handed meanwhile).
func freePort(t *testing.T) string {
	t.Helper()
	return testutil.FreePort(t)
}

// reserve takes one of n slots of a resource the host's e2e runs share (a
// subnet, a uid range) for the rest of the test, so that no other e2e run
// on this host (a concurrent `make test`, another checkout) gets the same
// one: it holds the abstract unix socket @cove-e2e-KIND-SLOT, which only
// one process can bind and which is gone when the test ends or its process
// dies (no file is left). free, if set, must also hold for the slot (no
// interface has an address in the subnet, say).
func reserve(t *testing.T, kind string, n int, free func(slot int) bool) int {
	t.Helper()
	first := rand.IntN(n)
	for i := range n {
		slot := (first + i) % n
		if free != nil && !free(slot) {
			continue
		}
		ln, err := net.Listen("unix", fmt.Sprintf("@cove-e2e-%s-%d", kind, slot))
		if err != nil {
			continue // another run holds it
		}
		t.Cleanup(func() { ln.Close() }) // after the cleanups registered later, which tear down what used it
		return slot
	}
	t.Fatalf("all %d %s slots are taken by other e2e runs", n, kind)
	return 0
}

// freeSubnet reserves a /24 in prefix (two octets, "10.214") that no
// interface has an address in.
func freeSubnet(t *testing.T, prefix string) string {
	t.Helper()
	slot := reserve(t, "subnet-"+prefix, 256, func(slot int) bool {
		p := netip.MustParsePrefix(fmt.Sprintf("%s.%d.0/24", prefix, slot))
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && p.Contains(ip.Unmap()) {
					return false
				}
			}
		}
		return true
	})
	return fmt.Sprintf("%s.%d.0/24", prefix, slot)
}

// uidRangeBase reserves the host uids a cluster's runners use:
// [base, base+32*65536), room for cove up's environments and a second
// runner's (TestSecondRunner's at base+16*65536), which the leftover checks
// look through.
func uidRangeBase(t *testing.T) uint64 {
	t.Helper()
	return 1_500_000_000 + uint64(reserve(t, "uids", 64, nil))*32*65536
}

// maxWait bounds waitFor: what the tests wait for (an environment that
// clones, pulls, builds and installs features) can take minutes on a
// machine busy with other tests.
const maxWait = 5 * time.Minute

// env is one user's view: the binary, a config dir and an ssh config.
type env struct {
	t       *testing.T
	cove    string
	cfgDir  string
	sshConf string
}

// run runs cove with args and returns stdout, stderr and the exit code.
func (e *env) run(args ...string) (string, string, int) {
	e.t.Helper()
	return e.runEnv(nil, nil, args...)
}

// runEnv runs cove with args, with extra environment variables and
// without those named in drop, and returns stdout, stderr and the exit
// code.
func (e *env) runEnv(extra, drop []string, args ...string) (string, string, int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.cove, args...)
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, d := range drop {
			keep = keep && name != d
		}
		if keep {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, append(extra, "COVE_CONFIG_DIR="+e.cfgDir)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("cove %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// must runs cove and fails the test unless it succeeds.
func (e *env) must(args ...string) string {
	e.t.Helper()
	out, errs, code := e.run(args...)
	if code != 0 {
		e.t.Fatalf("cove %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// ssh runs the real OpenSSH client with the config `cove config-ssh` wrote.
func (e *env) ssh(args ...string) (string, int) {
	e.t.Helper()
	return e.tool("ssh", append([]string{"-F", e.sshConf}, args...)...)
}

func (e *env) tool(name string, args ...string) (string, int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "COVE_CONFIG_DIR="+e.cfgDir)
	b, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(b), code
}

// envJSON returns `cove env get NAME -o json` decoded.
func (e *env) envJSON(name string) map[string]any {
	e.t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(e.must("env", "get", name, "-o", "json")), &m); err != nil {
		e.t.Fatal(err)
	}
	return m
}

func field(m map[string]any, path ...string) string {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = mm[p]
	}
	if cur == nil {
		return ""
	}
	return fmt.Sprint(cur)
}

// daemon is a cove process (up or runner) the test controls.
type daemon struct {
	t    *testing.T
	args []string
	bin  string
	env  []string
	log  string
	cmd  *exec.Cmd

	exited  chan struct{} // closed once cmd has exited
	exitErr error         // cmd.Wait's result, set before exited is closed
}

// running holds the daemons started and not yet stopped or killed:
// waitFor gives up at once, with the log, when one of them exits by itself
// (no use waiting minutes for a runner that could not start).
var running sync.Map // *daemon → struct{}

// checkDaemons fails the test if a running daemon has exited.
func checkDaemons(t *testing.T, what string) {
	t.Helper()
	running.Range(func(k, _ any) bool {
		d := k.(*daemon)
		select {
		case <-d.exited:
			t.Fatalf("%s %s exited (%v) while the test waited for %s; its log:\n%s", d.bin, strings.Join(d.args, " "), d.exitErr, what, d.logTail())
		default:
		}
		return true
	})
}

func (d *daemon) start() {
	d.t.Helper()
	f, err := os.OpenFile(d.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	args := d.args
	if len(args) > 0 && (args[0] == "up" || args[0] == "runner") {
		// The tests' registries and feature servers listen on the host's
		// loopback at random ports: allow them, as an operator would.
		args = append(slices.Clone(args), "--insecure-registry", "127.0.0.1")
	}
	cmd := exec.Command(d.bin, args...)
	cmd.Env = append(os.Environ(), d.env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	f.Close()
	d.cmd = cmd
	exited := make(chan struct{})
	d.exited = exited
	go func() { d.exitErr = cmd.Wait(); close(exited) }()
	running.Store(d, struct{}{})
}

// kill9 kills the daemon the hard way, as a crash would.
func (d *daemon) kill9() {
	if d.cmd == nil {
		return
	}
	running.Delete(d)
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	d.cmd = nil
}

// stop asks the daemon to exit (SIGTERM), then kills it.
func (d *daemon) stop() {
	if d.cmd == nil {
		return
	}
	running.Delete(d)
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(testutil.Patience(d.t)):
		d.t.Errorf("%s %s did not exit on SIGTERM; killing it", d.bin, strings.Join(d.args, " "))
		_ = d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.exited
	}
	d.cmd = nil
}

// count counts occurrences of s in the daemon's whole log.
func (d *daemon) count(s string) int {
	b, _ := os.ReadFile(d.log)
	return strings.Count(string(b), s)
}

func (d *daemon) logTail() string {
	b, _ := os.ReadFile(d.log)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// waitFor polls f (every 200 ms: f often runs cove) until it returns true,
// for up to testutil.PatienceUpTo(t, maxWait). It fails at once when a
// daemon the test started exits meanwhile.
func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	patience := testutil.PatienceUpTo(t, maxWait)
	deadline := time.Now().Add(patience)
	for time.Now().Before(deadline) {
		if f() {
			return
		}
		checkDaemons(t, what)
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("gave up after %s waiting for %s", patience, what)
}

// hostLeftovers lists what a runner left on the host: mounts under dir,
// cgroups named parent, live processes with host uids in [lo, hi), and
// runc containers under runcRoot. Zombies are reported separately: this
// sandbox's PID 1 does not reap orphans, so a container whose runner was
// killed -9 can leave one (systemd reaps them on real hosts).
func hostLeftovers(dir, parent, runcRoot string, lo, hi uint64) (left []string, zombies []string) {
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 4 && strings.HasPrefix(fields[4], dir) {
				left = append(left, "mount "+fields[4])
			}
		}
		f.Close()
	}
	for _, base := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			p := filepath.Join(base, e.Name(), parent)
			if base == "/sys/fs/cgroup/unified" {
				p = filepath.Join(base, parent)
			}
			sub, err := os.ReadDir(p)
			if err != nil {
				continue
			}
			for _, s := range sub {
				if s.IsDir() {
					left = append(left, "cgroup "+filepath.Join(p, s.Name()))
				}
			}
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		var uid uint64
		state := ""
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Uid:"); ok {
				uid, _ = strconv.ParseUint(strings.Fields(v)[1], 10, 64)
			}
			if v, ok := strings.CutPrefix(line, "State:"); ok {
				state = strings.TrimSpace(v)
			}
		}
		if uid >= lo && uid < hi {
			desc := fmt.Sprintf("process %d uid %d %s", pid, uid, state)
			if strings.HasPrefix(state, "Z") {
				zombies = append(zombies, desc)
			} else {
				left = append(left, desc)
			}
		}
	}
	if ents, err := os.ReadDir(runcRoot); err == nil {
		for _, e := range ents {
			left = append(left, "runc container "+e.Name())
		}
	}
	return left, zombies
}

// forceClean removes whatever a failed test left: containers, mounts,
// cgroups, directories.
func forceClean(t *testing.T, dir, parent string, runcRoots ...string) {
	for _, root := range runcRoots {
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			_ = exec.Command("runc", "--root", root, "delete", "--force", e.Name()).Run()
		}
		_ = os.RemoveAll(root)
	}
	for i := 0; i < 3; i++ {
		b, _ := os.ReadFile("/proc/self/mountinfo")
		var mounts []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && strings.HasPrefix(f[4], dir) {
				mounts = append(mounts, f[4])
			}
		}
		for j := len(mounts) - 1; j >= 0; j-- {
			_ = syscall.Unmount(mounts[j], syscall.MNT_DETACH)
		}
	}
	for _, base := range []string{"/sys/fs/cgroup"} {
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			p := filepath.Join(base, e.Name(), parent)
			sub, _ := os.ReadDir(p)
			for _, s := range sub {
				if s.IsDir() {
					_ = os.Remove(filepath.Join(p, s.Name()))
				}
			}
			_ = os.Remove(p)
			// The runner's own cgroup, next to the parent: left behind by
			// a runner killed and not started again.
			_ = os.Remove(p + ".runner")
		}
	}
	_ = os.Remove(filepath.Join("/sys/fs/cgroup/unified", parent))
	_ = os.Remove(filepath.Join("/sys/fs/cgroup/unified", parent) + ".runner")
	if err := os.RemoveAll(dir); err != nil {
		t.Logf("cleanup %s: %v", dir, err)
	}
}

// gitRepo makes a local repository with the given files committed.
func gitRepo(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("git", "init", "-q", "-b", "main")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git init: %v\n%s", err, b)
	}
	gitCommitAll(t, dir)
	return dir
}

// background runs cove in the background and returns a stop func.
func (e *env) background(args ...string) func() {
	e.t.Helper()
	cmd := exec.Command(e.cove, args...)
	cmd.Env = append(os.Environ(), "COVE_CONFIG_DIR="+e.cfgDir)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	return func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
}

// sshBackground starts OpenSSH in the background and returns a stop func.
func (e *env) sshBackground(args ...string) func() {
	e.t.Helper()
	cmd := exec.Command("ssh", append([]string{"-F", e.sshConf}, args...)...)
	cmd.Env = append(os.Environ(), "COVE_CONFIG_DIR="+e.cfgDir)
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	return func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
}

// networkLeftovers lists the bridge and nftables tables a runner left.
func networkLeftovers(bridge, table string) []string {
	var left []string
	if _, err := os.Stat("/sys/class/net/" + bridge); err == nil {
		left = append(left, "bridge "+bridge)
	}
	for _, family := range []string{"inet", "bridge"} {
		if exec.Command("nft", "list", "table", family, table).Run() == nil {
			left = append(left, "nftables table "+family+" "+table)
		}
	}
	return left
}

// forceCleanNetwork removes what a failed test's runner left on the host's
// network: its bridge and nftables tables (environments' veths and
// namespace files go with forceClean's unmounts).
func forceCleanNetwork(bridge, table string) {
	_ = exec.Command("ip", "link", "del", bridge).Run()
	for _, family := range []string{"inet", "bridge"} {
		_ = exec.Command("nft", "delete", "table", family, table).Run()
	}
}

// gitCommitAll commits everything in a repository made by gitRepo.
func gitCommitAll(t *testing.T, dir string) {
	t.Helper()
	for _, args := range [][]string{{"add", "-A"}, {"-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "more"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, b)
		}
	}
}
