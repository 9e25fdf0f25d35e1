package e2e

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/testutil"
	"github.com/creack/pty"
)

// envProc is a process of an environment as the host sees it.
type envProc struct {
	pid        int
	group      string // its CPU group below the dev container's cgroup
	cmdline    string
	tty        bool
	nsInit     bool
	oomAdj     int
	sessionLdr bool
}

// envProcs lists the processes in the CPU groups of environment envID's
// dev container, read from the host.
func envProcs(t *testing.T, parent, envID string) []envProc {
	t.Helper()
	base := filepath.Join("/sys/fs/cgroup/cpu", parent, envID)
	if cgroups.Mode() == cgroups.Unified {
		base = filepath.Join("/sys/fs/cgroup", parent, envID)
	}
	var out []envProc
	for _, g := range []string{"", "agent", "interactive", "workload"} {
		b, err := os.ReadFile(filepath.Join(base, g, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			p, ok := readEnvProc(pid)
			if !ok {
				continue
			}
			p.group = g
			out = append(out, p)
		}
	}
	return out
}

func readEnvProc(pid int) (envProc, bool) {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	cmd, err1 := os.ReadFile(filepath.Join(dir, "cmdline"))
	stat, err2 := os.ReadFile(filepath.Join(dir, "stat"))
	status, err3 := os.ReadFile(filepath.Join(dir, "status"))
	adj, err4 := os.ReadFile(filepath.Join(dir, "oom_score_adj"))
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return envProc{}, false
	}
	p := envProc{pid: pid, cmdline: string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))}
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 {
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 4 {
			p.tty = f[4] != "0"
			p.sessionLdr = f[3] == strconv.Itoa(pid)
		}
	}
	for _, l := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(l, "NSpid:"); ok {
			f := strings.Fields(rest)
			p.nsInit = len(f) > 1 && f[len(f)-1] == "1"
		}
	}
	p.oomAdj, _ = strconv.Atoi(strings.TrimSpace(string(adj)))
	return p, true
}

// TestProcessGroups: in a real environment, the agent runs in the agent
// group, a terminal's login shell in the interactive group, a CPU-bound
// loop typed into that terminal and a command run without a terminal in
// the workload group, with the OOM order raised accordingly; deleting the
// environment leaves none of its cgroups.
func TestProcessGroups(t *testing.T) {
	// A low demotion threshold: the loop gets at least this much of a
	// CPU however loaded the host is.
	c := newClusterWith(t, "--process-groups-demote", "0.02")
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "pgrepo"), map[string]string{
		".devcontainer/devcontainer.json": `{"image": "` + reg + `/test/busybox:latest"}`,
	})
	u.must("env", "create", repo, "--name", "pg", "--wait", "--timeout", "3m")
	envID := field(u.envJSON("pg"), "id")
	if c.up.count("process groups on") == 0 {
		t.Fatalf("the runner did not start sorting processes:\n%s", c.up.logTail())
	}
	// The image's layers were unpacked by a child in the runner's unpack
	// work cgroup (internal/runner/unpack.go), removed once done.
	if c.up.count(c.cgroup+"/.work/unpack") == 0 {
		t.Errorf("image layers not unpacked in the unpack work cgroup:\n%s", c.up.logTail())
	}

	stopSleep := u.background("ssh", "pg", "--", "sleep 1000")
	defer stopSleep()
	term := exec.Command(u.cove, "ssh", "pg")
	term.Env = append(os.Environ(), "COVE_CONFIG_DIR="+u.cfgDir, "TERM=xterm")
	ptmx, err := pty.Start(term)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = term.Process.Kill(); _ = term.Wait() }()
	defer ptmx.Close()
	out := &testutil.Buffer{}
	go func() { _, _ = io.Copy(out, ptmx) }()
	// The loop runs until /tmp/stop exists; "LO''OP" prints as LOOP only
	// from the shell.
	if _, err := io.WriteString(ptmx, "echo LO''OP; sh -c 'while [ ! -e /tmp/stop ]; do :; done'\r"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the terminal's shell to start the loop", func() bool { return strings.Contains(out.String(), "LOOP") })

	var last []envProc
	defer func() {
		if t.Failed() {
			for _, p := range last {
				t.Logf("pid %d group %q oom_score_adj %d tty %v session leader %v: %s", p.pid, p.group, p.oomAdj, p.tty, p.sessionLdr, p.cmdline)
			}
			t.Logf("terminal output: %q", out.String())
		}
	}()
	waitFor(t, "each process in its CPU group", func() bool {
		last = envProcs(t, c.cgroup, envID)
		var agent, shell, loop, sleep bool
		for _, p := range last {
			switch {
			case p.nsInit:
				agent = p.group == "agent"
			case strings.Contains(p.cmdline, "/tmp/stop"):
				loop = p.group == "workload" && p.oomAdj >= 500
			case p.tty && p.sessionLdr:
				shell = p.group == "interactive" && p.oomAdj >= 100
			case strings.Contains(p.cmdline, "sleep 1000"):
				sleep = p.group == "workload" && p.oomAdj >= 500
			}
		}
		return agent && shell && loop && sleep
	})
	for _, p := range last {
		t.Logf("pid %d group %q oom_score_adj %d tty %v: %s", p.pid, p.group, p.oomAdj, p.tty, p.cmdline)
	}
	// The shell never left the interactive group.
	for _, p := range envProcs(t, c.cgroup, envID) {
		if p.tty && p.sessionLdr && p.group != "interactive" {
			t.Errorf("login shell %d in %q", p.pid, p.group)
		}
	}

	u.must("ssh", "pg", "--", "touch /tmp/stop")
	_ = term.Process.Kill()
	stopSleep()
	u.must("env", "delete", "pg", "--wait")
	if left, _ := hostLeftovers(c.dir, c.cgroup, c.runcRoots[0], c.rangeBase, c.rangeBase+8*65536); len(left) > 0 {
		t.Errorf("left on the host after delete: %v", left)
	}
}
