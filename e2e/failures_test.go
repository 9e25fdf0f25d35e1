package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestClearFailures: each bad input ends with a clear phase and message,
// the CLI exits non-zero, and nothing already on disk is lost.
func TestClearFailures(t *testing.T) {
	c := newCluster(t)
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "plain"), map[string]string{"README.md": "plain\n"})

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown-image", []string{repo, "--image", reg + "/test/nope:latest"}, `image "` + reg + `/test/nope:latest" not found`},
		{"bad-git-url", []string{"file:///nonexistent/repo.git", "--image", reg + "/test/busybox:latest"}, "git clone"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := u.run(append([]string{"env", "create", "--name", tc.name, "--wait", "--timeout", "2m"}, tc.args...)...)
			if code == 0 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("create: exit %d, stderr %q; want failure mentioning %q", code, errOut, tc.want)
			}
			j := u.envJSON(tc.name)
			if msg := field(j, "status", "failureMessage"); !strings.Contains(msg, tc.want) {
				t.Fatalf("failureMessage %q, want %q", msg, tc.want)
			}
			if field(j, "status", "phase") != "ENVIRONMENT_PHASE_STOPPED" {
				t.Fatalf("phase %s, want STOPPED", field(j, "status", "phase"))
			}
		})
	}

	// A registry that does not answer is a failure that may heal: the
	// environment is not stopped, and its status says why it waits and
	// when it tries again.
	u.must("env", "create", "--name", "no-registry", repo, "--image", "127.0.0.1:1/test/busybox:latest")
	waitFor(t, "the retry shown in the machine sub-status", func() bool {
		j := u.envJSON("no-registry")
		msg := field(j, "status", "machine", "message")
		return strings.Contains(msg, "registry 127.0.0.1:1 unreachable") && strings.Contains(msg, "retrying in")
	})
	if j := u.envJSON("no-registry"); field(j, "status", "phase") == "ENVIRONMENT_PHASE_STOPPED" || field(j, "status", "failureMessage") != "" {
		t.Fatalf("an unreachable registry stopped the environment: %s %q", field(j, "status", "phase"), field(j, "status", "failureMessage"))
	}
	u.must("env", "delete", "no-registry", "--wait")

	// The failed start kept the cloned workspace; fixing the input (here:
	// the registry comes back under the same name) and starting again works.
	id := field(u.envJSON("unknown-image"), "id")
	ws := filepath.Join(c.dir, "data", "runner", "envs", id, "workspace", "plain", "README.md")
	if b, err := os.ReadFile(ws); err != nil || string(b) != "plain\n" {
		t.Fatalf("workspace of the failed environment lost: %v %q", err, b)
	}
	if out := u.must("env", "list"); !strings.Contains(out, "not found") {
		t.Fatalf("env list does not show the failure:\n%s", out)
	}
	if _, errOut, code := u.run("env", "start", "unknown-image", "--wait", "--timeout", "1m"); code == 0 || !strings.Contains(errOut, "not found") {
		t.Fatalf("retrying a failed start: exit %d %q", code, errOut)
	}
	// A class no runner offers is refused at creation; nothing is stored.
	if _, errOut, code := u.run("env", "create", repo, "--name", "no-runner", "--class", "gpu"); code == 0 || !strings.Contains(errOut, `no active runner offers class "gpu"`) {
		t.Fatalf("unknown class: exit %d %q", code, errOut)
	}
	if out := u.must("env", "list"); strings.Contains(out, "no-runner") {
		t.Fatalf("refused environment listed:\n%s", out)
	}
	if _, errOut, code := u.run("env", "create", repo, "--name", "Bad_Name"); code == 0 || !strings.Contains(errOut, "invalid name") {
		t.Fatalf("bad name: exit %d %q", code, errOut)
	}
	if _, errOut, code := u.run("ssh", "unknown-image", "--", "true"); code == 0 || !strings.Contains(errOut, "not running") {
		t.Fatalf("ssh into a failed environment: exit %d %q", code, errOut)
	}
	for _, tc := range cases {
		u.must("env", "delete", tc.name, "--wait")
	}
	left, _ := hostLeftovers(c.dir, c.cgroup, c.runcRoots[0], c.rangeBase, c.rangeBase+8*65536)
	if len(left) > 0 {
		t.Fatalf("left on the host:\n%s", strings.Join(left, "\n"))
	}
}

// TestSecondRunner: a second runner joins with a one-time token, the
// scheduler places environments on it, its loss is reported, and when it
// comes back it adopts its environment.
func TestSecondRunner(t *testing.T) {
	c := newCluster(t)
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "repo"), map[string]string{"README.md": "x\n"})

	token := strings.TrimSpace(u.must("runner", "join-token"))
	runcRoot2 := c.runcRoots[0] + "-2"
	c.runcRoots = append(c.runcRoots, runcRoot2)
	base2 := c.rangeBase + 16*65536
	gw2 := freePort(t)
	second := &daemon{t: t, bin: u.cove, log: filepath.Join(c.dir, "runner2.log"), args: []string{
		"runner", "--server", "http://" + c.server, "--join-token", token, "--name", "second",
		"--data-dir", filepath.Join(c.dir, "runner2"), "--ssh-listen", gw2, "--proxy-listen", freePort(t), "--runc-root", runcRoot2,
		"--cgroup-parent", c.cgroup, "--uid-range-base", fmt.Sprint(base2), "--max-environments", "4",
		"--bridge", c.bridge + "b", "--subnet", freeSubnet(t, "10.215"), "--nft-table", "cove-e2e-" + c.id + "-2",
	}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("second runner log:\n%s", second.logTail())
		}
		second.stop()
		forceCleanNetwork(c.bridge+"b", "cove-e2e-"+c.id+"-2")
	})
	second.start()
	waitFor(t, "two active runners", func() bool {
		n := 0
		for _, f := range strings.Fields(u.must("runner", "list")) {
			if f == "ACTIVE" { // not INACTIVE
				n++
			}
		}
		return n == 2
	})
	// The join token was for one runner only.
	if _, _, code := u.run("runner", "--server", "http://"+c.server, "--join-token", token, "--data-dir", filepath.Join(c.dir, "runner3"), "--ssh-listen", freePort(t)); code == 0 {
		t.Fatal("a used join token was accepted again")
	}

	// Both runners offer the class; the scheduler spreads by load.
	u.must("env", "create", repo, "--name", "one", "--image", reg+"/test/busybox:latest", "--wait")
	// The second runner takes only network sources: serve the repository
	// with git daemon on loopback.
	outsideNS(t, c.id)
	gitURL := gitDaemon(t, filepath.Dir(repo), outsideIP+":9418", "cove-out-"+c.id) + "/repo"
	u.must("env", "create", gitURL, "--name", "two", "--image", reg+"/test/busybox:latest", "--wait")
	one, two := u.envJSON("one"), u.envJSON("two")
	if field(one, "metadata", "runnerId") == field(two, "metadata", "runnerId") {
		t.Fatalf("both environments on runner %s", field(one, "metadata", "runnerId"))
	}
	if field(two, "status", "ssh", "address") != gw2 {
		t.Fatalf("env two's gateway %s, want the second runner's %s", field(two, "status", "ssh", "address"), gw2)
	}
	if out, _, code := u.run("ssh", "two", "--", "hostname; cat /workspaces/repo/README.md"); code != 0 || out != "two\nx\n" {
		t.Fatalf("ssh two: %d %q", code, out)
	}

	// Lose the second runner: the owner is told.
	second.kill9()
	waitFor(t, "the lost runner to be reported", func() bool {
		return strings.Contains(field(u.envJSON("two"), "status", "failureMessage"), `runner "second" lost`)
	})
	if !strings.Contains(u.must("runner", "list"), "INACTIVE") {
		t.Fatal("lost runner not INACTIVE")
	}
	// It comes back (its credentials are saved; no join token needed) and
	// adopts the environment, which kept running.
	second.args = removeFlag(second.args, "--join-token")
	second.start()
	waitFor(t, "env two healthy again", func() bool {
		j := u.envJSON("two")
		return field(j, "status", "failureMessage") == "" && field(j, "status", "phase") == "ENVIRONMENT_PHASE_RUNNING"
	})
	// The server clears "lost" at the first heartbeat; the runner adopts the
	// environment when its assignment watch delivers it, moments later.
	waitFor(t, "ssh into env two after the runner came back", func() bool {
		out, _, code := u.run("ssh", "two", "--", "cat /workspaces/repo/README.md")
		return code == 0 && out == "x\n"
	})

	u.must("env", "delete", "one", "--wait")
	u.must("env", "delete", "two", "--wait")
	for i, root := range c.runcRoots {
		base := c.rangeBase
		if i == 1 {
			base = base2
		}
		left, _ := hostLeftovers(c.dir, c.cgroup, root, base, base+8*65536)
		if len(left) > 0 {
			t.Fatalf("left on the host:\n%s", strings.Join(left, "\n"))
		}
	}
}

// gitDaemon serves the repositories under dir over git:// on loopback.
func gitDaemon(t *testing.T, dir, listen string, netns string) string {
	t.Helper()
	addr := listen
	if addr == "" {
		addr = freePort(t)
	}
	host, port, _ := strings.Cut(addr, ":")
	args := []string{"daemon", "--export-all", "--reuseaddr", "--base-path=" + dir, "--listen=" + host, "--port=" + port, dir}
	bin := "git"
	if netns != "" {
		// Served from the test's "outside" namespace, where environments
		// (and their clones) can reach it through NAT.
		bin, args = "ip", append([]string{"netns", "exec", netns, "git"}, args...)
	}
	d := &daemon{t: t, bin: bin, log: filepath.Join(dir, "git-daemon.log"), args: args}
	d.start()
	t.Cleanup(d.stop)
	dial := func() error {
		if netns == "" {
			conn, err := net.Dial("tcp", addr)
			if err == nil {
				conn.Close()
			}
			return err
		}
		return exec.Command("ip", "netns", "exec", netns, "busybox", "nc", "-w", "1", host, port).Run() // stdin: /dev/null
	}
	waitFor(t, "git daemon", func() bool { return dial() == nil })
	return "git://" + addr
}

func removeFlag(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}
