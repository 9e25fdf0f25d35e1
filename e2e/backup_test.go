package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackupRestore: work in the workspace, outside it (/usr/local, the
// container's upper directory) and in a volume survives the runner
// losing the environment's directory: `cove env stop` backs it up (the
// real `cove internal-backup` child), and `cove env start` on the runner
// without it restores that backup instead of cloning afresh. The files
// match the checksums taken before.
func TestBackupRestore(t *testing.T) {
	c := newCluster(t)
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "repo"), map[string]string{
		"README.md": "x\n",
		".devcontainer/devcontainer.json": `{"image": "` + reg + `/test/debian:latest",
			"mounts": [{"type": "volume", "source": "data", "target": "/data"}]}`,
	})
	u.must("env", "create", repo, "--name", "bk", "--wait", "--timeout", "3m")
	const files = "/workspaces/repo/work.txt /usr/local/share/mine.bin /data/v.txt"
	if out, _, code := u.run("ssh", "bk", "--", "echo first > /workspaces/repo/work.txt"); code != 0 {
		t.Fatalf("writing: %d %q", code, out)
	}
	// A backup of the running environment (frozen for its walk, then
	// thawed: it answers after).
	u.must("env", "backup", "bk", "--wait", "--timeout", "2m")
	if out, _, code := u.run("ssh", "bk", "--", "cat /workspaces/repo/work.txt"); code != 0 || out != "first\n" {
		t.Fatalf("after a backup of the running environment: %d %q", code, out)
	}
	// A runner killed while the environment was frozen: the next one
	// thaws it before anything else.
	id := field(u.envJSON("bk"), "id")
	if id == "" {
		t.Fatal("no environment id")
	}
	state := filepath.Join("/sys/fs/cgroup/freezer", c.cgroup, id, "freezer.state")
	if _, err := os.Stat(state); err == nil {
		c.up.kill9()
		if err := os.WriteFile(state, []byte("FROZEN"), 0); err != nil {
			t.Fatal(err)
		}
		c.up.start()
		waitFor(t, "the environment thawed by the restarted runner", func() bool {
			b, err := os.ReadFile(state)
			return err == nil && strings.TrimSpace(string(b)) == "THAWED"
		})
		waitFor(t, "cove up to come back", func() bool { _, _, code := u.run("whoami"); return code == 0 })
		if out, _, code := u.run("ssh", "bk", "--", "cat /workspaces/repo/work.txt"); code != 0 || out != "first\n" {
			t.Fatalf("after the restart: %d %q", code, out)
		}
	} else {
		t.Logf("no v1 freezer here (%v): the thaw at start is tested on fake hierarchies in the runner package", err)
	}

	// The work the stop's backup must keep.
	out, _, code := u.run("ssh", "bk", "--", `set -e
		S=; [ "$(id -u)" = 0 ] || S=sudo
		echo work > /workspaces/repo/work.txt
		head -c 3000000 /dev/urandom | $S tee /usr/local/share/mine.bin >/dev/null
		echo volume | $S tee /data/v.txt >/dev/null
		sha256sum `+files)
	if code != 0 {
		t.Fatalf("writing files: %d %q", code, out)
	}
	before := out

	clones := c.up.count("step=clone ")
	u.must("env", "stop", "bk", "--wait", "--timeout", "2m")
	var list struct {
		Backups []struct {
			ID      string `json:"id"`
			Trigger string `json:"trigger"`
			Files   string `json:"files"`
		} `json:"backups"`
	}
	if err := json.Unmarshal([]byte(u.must("env", "backups", "bk", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Backups) != 2 || list.Backups[0].Trigger != "stop" || list.Backups[1].Trigger != "manual" {
		t.Fatalf("backups after the stop: %+v", list.Backups)
	}

	// The runner loses the environment: stopped, its directory removed.
	c.up.stop()
	envDir := filepath.Join(c.dir, "data", "runner", "envs", id)
	if _, err := os.Stat(envDir); err != nil {
		t.Fatalf("the environment's directory: %v", err)
	}
	if err := os.RemoveAll(envDir); err != nil {
		t.Fatal(err)
	}
	c.up.start()
	waitFor(t, "cove up to come back", func() bool { _, _, code := u.run("whoami"); return code == 0 })
	u.must("env", "start", "bk", "--wait", "--timeout", "3m")
	after, _, code := u.run("ssh", "bk", "--", "sha256sum "+files)
	if code != 0 || after != before {
		t.Fatalf("after the restore (%d):\n%s\nbefore:\n%s", code, after, before)
	}
	if n := c.up.count("step=clone "); n != clones {
		t.Errorf("the start cloned instead of restoring (%d clone steps, %d before)", n, clones)
	}
	u.must("env", "delete", "bk", "--wait")
}

// TestRunnerKilledMidBackup: the runner killed -9 while a backup of a
// running environment walks it (frozen): its child dies with it, nothing
// is listed, the next runner thaws the environment and takes the backup
// asked for again, complete.
func TestRunnerKilledMidBackup(t *testing.T) {
	// A slow backup: a fiftieth of a CPU for 64 MB of random data, and a
	// freeze bound that does not end it first.
	c := newClusterWith(t, "--backup-cpus", "0.02", "--backup-freeze-max", "10m")
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "repo"), map[string]string{"README.md": "x\n"})
	u.must("env", "create", repo, "--name", "kb", "--image", reg+"/test/debian:latest", "--wait", "--timeout", "3m")
	sum, _, code := u.run("ssh", "kb", "--", "head -c 64000000 /dev/urandom > /workspaces/repo/big.bin && sha256sum /workspaces/repo/big.bin")
	if code != 0 {
		t.Fatalf("writing: %d %q", code, sum)
	}
	id := field(u.envJSON("kb"), "id")
	state := filepath.Join("/sys/fs/cgroup/freezer", c.cgroup, id, "freezer.state")
	if _, err := os.Stat(state); err != nil {
		t.Skipf("no v1 freezer for the environment (%v): the runner package tests the thaw on fake hierarchies", err)
	}
	u.must("env", "backup", "kb")
	waitFor(t, "the environment frozen for the backup", func() bool {
		b, _ := os.ReadFile(state)
		return strings.TrimSpace(string(b)) == "FROZEN"
	})
	c.up.kill9()
	if b, _ := os.ReadFile(state); strings.TrimSpace(string(b)) != "FROZEN" {
		t.Fatalf("freezer.state %q right after the kill: the backup was over before it", b)
	}
	manifests := filepath.Join(c.dir, "data", "backups", "manifests", id)
	if ents, _ := os.ReadDir(manifests); len(ents) != 0 {
		t.Fatalf("a killed backup left %d manifests", len(ents))
	}
	c.up.start()
	waitFor(t, "the environment thawed by the restarted runner", func() bool {
		b, _ := os.ReadFile(state)
		return strings.TrimSpace(string(b)) == "THAWED"
	})
	waitFor(t, "the backup asked for, taken again", func() bool {
		out, _, code := u.run("env", "backups", "kb", "-o", "json")
		return code == 0 && strings.Contains(out, `"manual"`)
	})
	var list struct {
		Backups []struct{ ID string }
	}
	if err := json.Unmarshal([]byte(u.must("env", "backups", "kb", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(manifests)
	if len(list.Backups) != 1 || len(ents) != 1 {
		t.Fatalf("%d backups listed, %d manifests stored: want the one complete backup", len(list.Backups), len(ents))
	}
	if out, _, code := u.run("ssh", "kb", "--", "sha256sum /workspaces/repo/big.bin"); code != 0 || out != sum {
		t.Fatalf("after the restart: %d %q, want %q", code, out, sum)
	}
	u.must("env", "delete", "kb", "--wait")
}
