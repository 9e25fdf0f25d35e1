package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/resources"
)

// backupChild is the pid of a `cove internal-backup` process (a backup or
// a restore) in the backup work cgroup of the runner whose cgroup parent
// is parent, 0 if none runs.
func backupChild(parent string) int {
	work := resources.WorkCgroupPath(parent, "backup")
	procs := filepath.Join("/sys/fs/cgroup", "cpu", work, "cgroup.procs")
	if cgroups.Mode() == cgroups.Unified {
		procs = filepath.Join("/sys/fs/cgroup", work, "cgroup.procs")
	}
	b, _ := os.ReadFile(procs)
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if slices.Contains(strings.Split(string(cmd), "\x00"), "internal-backup") {
			return pid
		}
	}
	return 0
}

// withBackupCPUs restarts-to-be arguments of cove up with --backup-cpus
// set to cpus (the slow backups a test kills need not stay slow after).
func withBackupCPUs(args []string, cpus string) []string {
	args = slices.Clone(args)
	for i := range args {
		if args[i] == "--backup-cpus" && i+1 < len(args) {
			args[i+1] = cpus
		}
	}
	return args
}

type backupEntry struct {
	ID      string `json:"id"`
	Trigger string `json:"trigger"`
}

// backupsOf lists an environment's backups, newest first.
func backupsOf(u *env, name string) []backupEntry {
	u.t.Helper()
	var l struct {
		Backups []backupEntry `json:"backups"`
	}
	if err := json.Unmarshal([]byte(u.must("env", "backups", name, "-o", "json")), &l); err != nil {
		u.t.Fatal(err)
	}
	return l.Backups
}

// storedManifests lists the manifests of an environment's backups in the
// storage of `cove up` (a directory: <data>/backups).
func storedManifests(c *cluster, id string) []string {
	ents, _ := os.ReadDir(filepath.Join(c.dir, "data", "backups", "manifests", id))
	var names []string
	for _, e := range ents {
		names = append(names, id+"/"+e.Name())
	}
	return names
}

// contentScript writes what an environment's user changed, in the
// workspace and outside it (an installed tool, home), plus big, a random
// file of that many bytes (what makes a backup or restore of it slow at a
// fraction of a CPU), and prints the checksums of it all.
func contentScript(text string, big int) string {
	return fmt.Sprintf(`set -e
		S=; [ "$(id -u)" = 0 ] || S=sudo
		echo %[1]s > /workspaces/repo/state.txt
		head -c %[2]d /dev/urandom > /workspaces/repo/big.bin
		printf '#!/bin/sh\necho %[1]s\n' | $S tee /usr/local/bin/x >/dev/null
		$S chmod 755 /usr/local/bin/x
		echo %[1]s > "$HOME/notes.txt"
		%[3]s`, text, big, checksums)
}

// checksums prints the checksums of what contentScript wrote.
const checksums = `sha256sum /workspaces/repo/state.txt /workspaces/repo/big.bin /usr/local/bin/x "$HOME/notes.txt"`

// TestRunnerKilledMidStop: the runner killed -9 while the backup of a
// `cove env stop` runs (its child in the backup work cgroup, slowed to a
// fiftieth of a CPU): nothing partial is listed or stored; restarted, it
// finishes the stop with a complete backup, reports STOPPED, and that
// backup restores (on a runner that lost the environment's directory) to
// the content the checksums were taken of.
func TestRunnerKilledMidStop(t *testing.T) {
	c := newClusterWith(t, "--backup-cpus", "0.02")
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "repo"), map[string]string{"README.md": "x\n"})
	u.must("env", "create", repo, "--name", "ks", "--image", reg+"/test/debian:latest", "--wait", "--timeout", "3m")
	before, _, code := u.run("ssh", "ks", "--", contentScript("stopped", 48_000_000))
	if code != 0 {
		t.Fatalf("writing: %d %q", code, before)
	}
	id := field(u.envJSON("ks"), "id")
	if id == "" {
		t.Fatal("no environment id")
	}

	u.must("env", "stop", "ks")
	waitFor(t, "the stop's backup child in the backup work cgroup", func() bool { return backupChild(c.cgroup) != 0 })
	c.up.kill9()
	if m := storedManifests(c, id); len(m) != 0 {
		t.Fatalf("manifests stored right after the kill: %v (the backup was over before it, or a partial one was named)", m)
	}

	c.up.args = withBackupCPUs(c.up.args, "1")
	c.up.start()
	waitFor(t, "cove up to come back", func() bool { _, _, code := u.run("whoami"); return code == 0 })
	waitFor(t, "the stop finished by the restarted runner", func() bool {
		return field(u.envJSON("ks"), "status", "phase") == "ENVIRONMENT_PHASE_STOPPED"
	})
	list := backupsOf(u, "ks")
	stored := storedManifests(c, id)
	if len(list) != 1 || list[0].Trigger != "stop" || len(stored) != 1 || stored[0] != list[0].ID {
		t.Fatalf("after the restart: backups listed %+v, manifests stored %v; want the one complete stop backup", list, stored)
	}
	if p := field(u.envJSON("ks"), "status", "backupProgress", "state", "phase"); p != "SUB_PHASE_READY" {
		t.Errorf("backup progress %s after the stop: %v", p, u.envJSON("ks")["status"])
	}
	if got := field(u.envJSON("ks"), "status", "lastBackup", "id"); got != list[0].ID {
		t.Errorf("last backup %q, want the stop's %q", got, list[0].ID)
	}

	// The backup holds the content: a runner without the environment's
	// directory restores it.
	c.up.stop()
	if left := backupChild(c.cgroup); left != 0 {
		t.Errorf("backup child %d still runs after the runner stopped", left)
	}
	if err := os.RemoveAll(filepath.Join(c.dir, "data", "runner", "envs", id)); err != nil {
		t.Fatal(err)
	}
	clones := c.up.count("step=clone ")
	c.up.start()
	waitFor(t, "cove up to come back", func() bool { _, _, code := u.run("whoami"); return code == 0 })
	u.must("env", "start", "ks", "--wait", "--timeout", "3m")
	after, _, code := u.run("ssh", "ks", "--", checksums)
	if code != 0 || after != lastLines(before, 4) {
		t.Fatalf("restored from the stop's backup (%d):\n%s\nwant:\n%s", code, after, before)
	}
	if n := c.up.count("step=clone "); n != clones {
		t.Errorf("the start cloned instead of restoring (%d clone steps, %d before)", n, clones)
	}
	u.must("env", "delete", "ks", "--wait")
}

// TestRunnerKilledMidRestore: the runner killed -9 while its restore
// child writes a backup back (`cove env restore --backup ID`, at a
// fiftieth of a CPU, the old content aside): restarted, it puts the old
// content back before anything else and carries the restore out; the
// environment runs on one content, whole by its checksums — never on a
// half-restored one — and nothing of the restore is left beside it.
func TestRunnerKilledMidRestore(t *testing.T) {
	c := newClusterWith(t, "--backup-cpus", "0.02")
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "repo"), map[string]string{"README.md": "x\n"})
	u.must("env", "create", repo, "--name", "kr", "--image", reg+"/test/debian:latest", "--wait", "--timeout", "3m")
	id := field(u.envJSON("kr"), "id")
	if id == "" {
		t.Fatal("no environment id")
	}
	old, _, code := u.run("ssh", "kr", "--", contentScript("old", 32_000_000))
	if code != 0 {
		t.Fatalf("writing: %d %q", code, old)
	}
	u.must("env", "backup", "kr", "--wait", "--timeout", "5m")
	list := backupsOf(u, "kr")
	if len(list) != 1 {
		t.Fatalf("backups %+v, want the manual one", list)
	}
	target := list[0].ID
	// Other content, of another size: the restore has to replace it all.
	current, _, code := u.run("ssh", "kr", "--", contentScript("current", 1_000_000))
	if code != 0 {
		t.Fatalf("writing: %d %q", code, current)
	}
	old, current = lastLines(old, 4), lastLines(current, 4)

	envDir := filepath.Join(c.dir, "data", "runner", "envs", id)
	record := filepath.Join(envDir, "restore.json")
	u.must("env", "restore", "kr", "--backup", target)
	// restore.json is written once the before-restore backup is done and
	// the content is aside: a child running then is the restore's.
	waitFor(t, "the restore child writing the backup back", func() bool {
		_, err := os.Stat(record)
		return err == nil && backupChild(c.cgroup) != 0
	})
	c.up.kill9()
	if _, err := os.Stat(record); err != nil {
		t.Fatalf("restore.json gone right after the kill (%v): the restore was over before it", err)
	}

	c.up.args = withBackupCPUs(c.up.args, "1")
	c.up.start()
	waitFor(t, "cove up to come back", func() bool { _, _, code := u.run("whoami"); return code == 0 })
	gen := field(u.envJSON("kr"), "spec", "restore", "generation")
	waitFor(t, "the restore carried out and the environment running", func() bool {
		j := u.envJSON("kr")
		return field(j, "status", "observedRestoreGeneration") == gen && field(j, "status", "phase") == "ENVIRONMENT_PHASE_RUNNING"
	})
	waitFor(t, "ssh into the environment after the restart", func() bool { _, _, code := u.run("ssh", "kr", "--", "true"); return code == 0 })
	got, _, code := u.run("ssh", "kr", "--", checksums)
	switch {
	case code == 0 && got == old:
		t.Logf("restored: the backup's content, whole")
	case code == 0 && got == current:
		t.Logf("the restore was not carried out (%s): the content before it, whole", field(u.envJSON("kr"), "status", "backupProgress", "state", "message"))
	default:
		t.Fatalf("after a restore killed midway (%d):\n%s\nwant either the backup's:\n%s\nor the content before:\n%s", code, got, old, current)
	}
	if p := field(u.envJSON("kr"), "status", "backupProgress", "operation"); p != "restore" {
		t.Errorf("backup progress is a %q, want the restore's outcome", p)
	}
	ents, _ := os.ReadDir(envDir)
	for _, e := range ents {
		if e.Name() == "restore.json" || strings.HasSuffix(e.Name(), ".pre-restore") {
			t.Errorf("left in the environment's directory: %s", e.Name())
		}
	}
	for _, b := range backupsOf(u, "kr") {
		if !slices.Contains(storedManifests(c, id), b.ID) {
			t.Errorf("backup %s listed without its manifest", b.ID)
		}
	}
	u.must("env", "delete", "kr", "--wait")
}

// lastLines is the last n lines of s (a script's checksums after what
// else it printed).
func lastLines(s string, n int) string {
	lines := strings.SplitAfter(strings.TrimRight(s, "\n")+"\n", "\n")
	lines = lines[:len(lines)-1] // the empty string after the last newline
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}
