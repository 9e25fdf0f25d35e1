package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// extraRunner is a runner process joined to a cluster's server, with its
// own data directory, runc root, uid range, bridge, subnet, nftables
// table and gateway.
type extraRunner struct {
	*daemon
	name     string
	dataDir  string
	gateway  string
	runcRoot string
	cgroup   string // its cgroup parent
	base     uint64 // its uid range base
}

// addRunner joins a second runner named name to the cluster (with a
// one-time join token) and waits until the server sees it active. Its
// uid range is the upper half of the one uidRangeBase reserved (where
// TestSecondRunner puts its own): one such runner per cluster. It has a
// cgroup parent of its own (its work cgroups are its own).
func (c *cluster) addRunner(name string, extra ...string) *extraRunner {
	t := c.t
	t.Helper()
	u := c.user
	token := strings.TrimSpace(u.must("runner", "join-token"))
	r := &extraRunner{name: name, dataDir: filepath.Join(c.dir, "runner-"+name), gateway: freePort(t),
		runcRoot: c.runcRoots[0] + "-" + name, cgroup: c.cgroup + "-" + name, base: c.rangeBase + 16*65536}
	c.runcRoots = append(c.runcRoots, r.runcRoot)
	bridge, table := c.bridge+"x", "cove-e2e-"+c.id+"-x"
	r.daemon = &daemon{t: t, bin: u.cove, log: filepath.Join(c.dir, "runner-"+name+".log"), args: append([]string{
		"runner", "--server", "http://" + c.server, "--join-token", token, "--name", name,
		"--data-dir", r.dataDir, "--ssh-listen", r.gateway, "--proxy-listen", freePort(t), "--runc-root", r.runcRoot,
		"--cgroup-parent", r.cgroup, "--uid-range-base", fmt.Sprint(r.base), "--max-environments", "4",
		"--bridge", bridge, "--subnet", freeSubnet(t, "10.215"), "--nft-table", table,
	}, extra...)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("runner %s log:\n%s", name, r.logTail())
		}
		r.stop()
		forceCleanNetwork(bridge, table)
		forceClean(t, r.dataDir, r.cgroup, r.runcRoot)
	})
	before := c.activeRunners()
	r.start()
	waitFor(t, "runner "+name+" to be active", func() bool { return c.activeRunners() == before+1 })
	// Its credentials are saved: a restart needs no join token.
	r.args = removeFlag(r.args, "--join-token")
	return r
}

// activeRunners counts the runners the server has ACTIVE.
func (c *cluster) activeRunners() int {
	n := 0
	for _, f := range strings.Fields(c.user.must("runner", "list")) {
		if f == "ACTIVE" { // not INACTIVE
			n++
		}
	}
	return n
}

// runnerID is the id of the runner named name (`cove runner list`).
func (c *cluster) runnerID(name string) string {
	for _, line := range strings.Split(c.user.must("runner", "list"), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == name {
			return f[1]
		}
	}
	return ""
}

// TestMoveToAnotherRunner: `cove env start NAME --runner OTHER --wait`
// moves an environment created on cove up's runner to a second runner:
// stopped and backed up where it was, restored on the other one (not
// cloned: the source is a local path that runner does not accept) and
// started there with everything the user changed, in the workspace and
// outside it (an installed tool, home), as the checksums taken before
// say; `cove env get` names the new runner and its gateway; the old
// runner's copy is deleted.
func TestMoveToAnotherRunner(t *testing.T) {
	c := newCluster(t)
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "repo"), map[string]string{"README.md": "x\n"})
	// Created while cove up's runner is the only one: it runs there.
	u.must("env", "create", repo, "--name", "mv", "--image", reg+"/test/debian:latest", "--wait", "--timeout", "3m")
	j := u.envJSON("mv")
	id, from := field(j, "id"), field(j, "metadata", "runnerId")
	if id == "" || from == "" {
		t.Fatalf("environment %v: no id or runner", j)
	}
	before, _, code := u.run("ssh", "mv", "--", contentScript("moved", 3_000_000))
	if code != 0 {
		t.Fatalf("writing: %d %q", code, before)
	}

	other := c.addRunner("other")
	otherID := c.runnerID("other")
	if otherID == "" || otherID == from {
		t.Fatalf("runner ids: other %q, cove up's %q", otherID, from)
	}
	u.must("env", "start", "mv", "--runner", "other", "--wait", "--timeout", "5m")
	j = u.envJSON("mv")
	if got := field(j, "metadata", "runnerId"); got != otherID {
		t.Fatalf("after the move the environment is on runner %q, want %q (other)", got, otherID)
	}
	if got := field(j, "status", "ssh", "address"); got != other.gateway {
		t.Errorf("after the move its gateway is %q, want the other runner's %q", got, other.gateway)
	}
	if got := field(j, "status", "phase"); got != "ENVIRONMENT_PHASE_RUNNING" {
		t.Errorf("after the move: phase %s", got)
	}
	if got := field(j, "status", "content", "phase"); got != "SUB_PHASE_READY" {
		t.Errorf("after the move the content is %s, want READY (restored counts as cloned)", got)
	}
	if out := u.must("env", "get", "mv"); !strings.Contains(out, otherID) {
		t.Errorf("cove env get does not name the new runner %s:\n%s", otherID, out)
	}
	after, _, code := u.run("ssh", "mv", "--", checksums)
	if code != 0 || after != before {
		t.Fatalf("on the other runner (%d):\n%s\nbefore the move:\n%s", code, after, before)
	}
	if out, _, code := u.run("ssh", "mv", "--", "x"); code != 0 || out != "moved\n" {
		t.Errorf("the tool installed before the move: %d %q", code, out)
	}
	list := backupsOf(u, "mv")
	if !slices.ContainsFunc(list, func(b backupEntry) bool { return b.Trigger == "stop" }) {
		t.Errorf("backups after the move %+v: want the old runner's stop backup", list)
	}
	if n := other.count("step=clone "); n != 0 {
		t.Errorf("the other runner cloned (%d clone steps) instead of restoring", n)
	}
	// The old copy is released: cove up's runner deletes it.
	oldDir := filepath.Join(c.dir, "data", "runner", "envs", id)
	waitFor(t, "the old runner's copy deleted", func() bool {
		_, err := os.Stat(oldDir)
		return os.IsNotExist(err)
	})
	// A clean move (stopped, its stop backup recorded) leaves nothing to
	// salvage: the old copy is deleted without one, and nobody is told of
	// one.
	if l := backupsOf(u, "mv"); slices.ContainsFunc(l, func(b backupEntry) bool { return b.Trigger == "salvage" }) {
		t.Errorf("a clean move left a salvage backup: %+v", l)
	}
	if out := u.must("env", "get", "mv"); strings.Contains(out, "salvaged") {
		t.Errorf("cove env get warns of a salvage after a clean move:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(other.dataDir, "envs", id)); err != nil {
		t.Errorf("the other runner's copy: %v", err)
	}

	u.must("env", "delete", "mv", "--wait")
	checkMoveLeftovers(t, c, other)
}

// checkMoveLeftovers fails t if either runner left anything on the host
// (once every environment is deleted).
func checkMoveLeftovers(t *testing.T, c *cluster, other *extraRunner) {
	t.Helper()
	for _, r := range []struct {
		dir, cgroup, root string
		base              uint64
	}{{c.dir, c.cgroup, c.runcRoots[0], c.rangeBase}, {other.dataDir, other.cgroup, other.runcRoot, other.base}} {
		if left, _ := hostLeftovers(r.dir, r.cgroup, r.root, r.base, r.base+8*65536); len(left) > 0 {
			t.Fatalf("left on the host:\n%s", strings.Join(left, "\n"))
		}
	}
}

// TestRunnerKilledMidMove: the runner an environment moves to killed -9
// while its restore child writes the backup back (a fiftieth of a CPU):
// restarted, it removes the half-restored trees and restores again; the
// environment runs there with the content of the checksums taken before
// the move, never started on part of it, and the old copy is deleted.
func TestRunnerKilledMidMove(t *testing.T) {
	c := newCluster(t)
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "repo"), map[string]string{"README.md": "x\n"})
	u.must("env", "create", repo, "--name", "km", "--image", reg+"/test/debian:latest", "--wait", "--timeout", "3m")
	id := field(u.envJSON("km"), "id")
	if id == "" {
		t.Fatal("no environment id")
	}
	before, _, code := u.run("ssh", "km", "--", contentScript("moved", 32_000_000))
	if code != 0 {
		t.Fatalf("writing: %d %q", code, before)
	}

	other := c.addRunner("other", "--backup-cpus", "0.02")
	otherID := c.runnerID("other")
	u.must("env", "start", "km", "--runner", "other")
	envDir := filepath.Join(other.dataDir, "envs", id)
	waitFor(t, "the other runner's restore child writing the backup back", func() bool {
		_, err := os.Stat(filepath.Join(envDir, "restore.json"))
		return err == nil && backupChild(other.cgroup) != 0
	})
	other.kill9()
	if _, err := os.Stat(filepath.Join(envDir, "restore.json")); err != nil {
		t.Fatalf("restore.json gone right after the kill (%v): the restore was over before it", err)
	}
	if p := field(u.envJSON("km"), "status", "phase"); p == "ENVIRONMENT_PHASE_RUNNING" {
		t.Fatalf("the environment is RUNNING while its restore was cut off")
	}

	other.args = withBackupCPUs(other.args, "1")
	other.start()
	waitFor(t, "the environment running on the other runner", func() bool {
		j := u.envJSON("km")
		return field(j, "metadata", "runnerId") == otherID && field(j, "status", "phase") == "ENVIRONMENT_PHASE_RUNNING"
	})
	waitFor(t, "ssh into the moved environment", func() bool { _, _, code := u.run("ssh", "km", "--", "true"); return code == 0 })
	after, _, code := u.run("ssh", "km", "--", checksums)
	if code != 0 || after != before {
		t.Fatalf("on the other runner after its restore was cut off (%d):\n%s\nbefore the move:\n%s", code, after, before)
	}
	ents, _ := os.ReadDir(envDir)
	for _, e := range ents {
		if e.Name() == "restore.json" || strings.HasSuffix(e.Name(), ".pre-restore") {
			t.Errorf("left in the environment's directory: %s", e.Name())
		}
	}
	waitFor(t, "the old runner's copy deleted", func() bool {
		_, err := os.Stat(filepath.Join(c.dir, "data", "runner", "envs", id))
		return os.IsNotExist(err)
	})
	u.must("env", "delete", "km", "--wait")
	checkMoveLeftovers(t, c, other)
}
