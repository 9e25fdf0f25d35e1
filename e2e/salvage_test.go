package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// salvageEntry is a backup as `cove env backups -o json` lists it.
type salvageEntry struct {
	ID      string `json:"id"`
	Trigger string `json:"trigger"`
	Note    string `json:"note"`
}

// TestSalvageOnReturn: an environment runs on a second runner, backed up
// once, then more work is done there and that runner is killed (its disk
// kept). The server reschedules the environment to cove up's runner from
// the backup: the new work is not there. When the second runner comes
// back, it backs up its copy as a salvage before deleting it: `cove env
// backups` lists it with a note, `cove env get` warns, the environment
// still runs from the older backup, and `cove env restore --backup ID`
// brings the work back.
func TestSalvageOnReturn(t *testing.T) {
	c := newClusterWith(t, "--reschedule-after", "5s")
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "repo"), map[string]string{"README.md": "x\n"})
	u.must("env", "create", repo, "--name", "sv", "--image", reg+"/test/debian:latest", "--wait", "--timeout", "3m")
	id := field(u.envJSON("sv"), "id")
	if id == "" {
		t.Fatal("no environment id")
	}
	other := c.addRunner("other")
	otherID := c.runnerID("other")
	u.must("env", "start", "sv", "--runner", "other", "--wait", "--timeout", "5m")
	if got := field(u.envJSON("sv"), "metadata", "runnerId"); got != otherID {
		t.Fatalf("on runner %q, want %q (other)", got, otherID)
	}
	if out, _, code := u.run("ssh", "sv", "--", "echo saved > /workspaces/repo/saved.txt"); code != 0 {
		t.Fatalf("write: %d %q", code, out)
	}
	u.must("env", "backup", "sv", "--wait")
	if out, _, code := u.run("ssh", "sv", "--", "echo the only copy > /workspaces/repo/unsaved.txt && sync"); code != 0 {
		t.Fatalf("write: %d %q", code, out)
	}

	// The second runner goes away (its disk stays): rescheduled.
	other.kill9()
	upID := ""
	waitFor(t, "the environment rescheduled off the lost runner and running", func() bool {
		j := u.envJSON("sv")
		upID = field(j, "metadata", "runnerId")
		return upID != "" && upID != otherID && field(j, "status", "phase") == "ENVIRONMENT_PHASE_RUNNING"
	})
	waitFor(t, "ssh into the rescheduled environment", func() bool { _, _, code := u.run("ssh", "sv", "--", "true"); return code == 0 })
	if out, _, code := u.run("ssh", "sv", "--", "cat /workspaces/repo/saved.txt; test ! -e /workspaces/repo/unsaved.txt"); code != 0 || out != "saved\n" {
		t.Fatalf("after the reschedule (%d): %q; want the backed-up file only", code, out)
	}
	oldDir := filepath.Join(other.dataDir, "envs", id)
	if _, err := os.Stat(oldDir); err != nil {
		t.Fatalf("the lost runner's copy: %v", err)
	}

	// It returns: salvage, then its copy is deleted.
	other.start()
	waitFor(t, "the returned runner's copy deleted", func() bool {
		_, err := os.Stat(oldDir)
		return os.IsNotExist(err)
	})
	var l struct {
		Backups []salvageEntry `json:"backups"`
	}
	if err := json.Unmarshal([]byte(u.must("env", "backups", "sv", "-o", "json")), &l); err != nil {
		t.Fatal(err)
	}
	var salvage salvageEntry
	for _, b := range l.Backups {
		if b.Trigger == "salvage" {
			salvage = b
		}
	}
	if salvage.ID == "" || !strings.Contains(salvage.Note, `"other"`) {
		t.Fatalf("backups %+v: want a salvage from runner other, with its note", l.Backups)
	}
	if out := u.must("env", "backups", "sv"); !strings.Contains(out, salvage.ID+": copy left on runner") {
		t.Errorf("cove env backups does not print the salvage's note:\n%s", out)
	}
	if out := u.must("env", "get", "sv"); !strings.Contains(out, "salvaged: ") || !strings.Contains(out, salvage.ID) {
		t.Errorf("cove env get does not warn of the salvage:\n%s", out)
	}
	j := u.envJSON("sv")
	if got := field(j, "status", "lastBackup", "id"); got == salvage.ID {
		t.Errorf("the salvage became the latest backup")
	}
	if field(j, "metadata", "runnerId") != upID {
		t.Errorf("the environment left runner %s after the salvage", upID)
	}

	// Roll forward by name.
	u.must("env", "restore", "sv", "--backup", salvage.ID, "--wait", "--timeout", "5m")
	waitFor(t, "ssh after the roll forward", func() bool { _, _, code := u.run("ssh", "sv", "--", "true"); return code == 0 })
	if out, _, code := u.run("ssh", "sv", "--", "cat /workspaces/repo/unsaved.txt"); code != 0 || out != "the only copy\n" {
		t.Fatalf("after rolling forward to the salvage (%d): %q", code, out)
	}
	u.must("env", "delete", "sv", "--wait")
	checkMoveLeftovers(t, c, other)
}
