package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackupRollback: `cove env restore --backup ID --wait` through the
// real binary rolls an environment back to an earlier backup, after backing
// up what it held (trigger before-restore), so restoring that one undoes
// the rollback; a backup of another environment is refused, and nothing
// changes.
func TestBackupRollback(t *testing.T) {
	c := newCluster(t)
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "repo"), map[string]string{
		"README.md":                       "x\n",
		".devcontainer/devcontainer.json": `{"image": "` + reg + `/test/debian:latest"}`,
	})
	u.must("env", "create", repo, "--name", "rb", "--wait", "--timeout", "3m")
	u.must("env", "create", repo, "--name", "other", "--wait", "--timeout", "3m")
	write := func(env, text string) {
		t.Helper()
		if out, _, code := u.run("ssh", env, "--", "echo "+text+" > /workspaces/repo/state.txt"); code != 0 {
			t.Fatalf("writing in %s: %d %q", env, code, out)
		}
	}
	read := func(env string) string {
		t.Helper()
		out, _, code := u.run("ssh", env, "--", "cat /workspaces/repo/state.txt")
		if code != 0 {
			t.Fatalf("reading in %s: %d %q", env, code, out)
		}
		return strings.TrimSpace(out)
	}
	type backup struct {
		ID      string `json:"id"`
		Trigger string `json:"trigger"`
	}
	list := func(env string) []backup {
		t.Helper()
		var l struct {
			Backups []backup `json:"backups"`
		}
		if err := json.Unmarshal([]byte(u.must("env", "backups", env, "-o", "json")), &l); err != nil {
			t.Fatal(err)
		}
		return l.Backups
	}

	write("rb", "one")
	if out := u.must("env", "backup", "rb", "--wait", "--timeout", "2m"); !strings.Contains(out, "Backed up rb:") {
		t.Fatalf("backup --wait printed %q", out)
	}
	one := list("rb")
	if len(one) != 1 || one[0].Trigger != "manual" || !strings.HasPrefix(one[0].ID, field(u.envJSON("rb"), "id")+"/") {
		t.Fatalf("backups after one: %+v", one)
	}
	write("rb", "two")
	write("other", "theirs")
	u.must("env", "backup", "other", "--wait", "--timeout", "2m")
	others := list("other")

	// Another environment's backup is not this one's to restore.
	if _, stderr, code := u.run("env", "restore", "rb", "--backup", others[0].ID); code == 0 || !strings.Contains(stderr, "has no backup") {
		t.Fatalf("restoring another environment's backup: %d %q", code, stderr)
	}
	if got := read("rb"); got != "two" {
		t.Fatalf("a refused restore changed the content: %q", got)
	}

	u.must("env", "restore", "rb", "--backup", one[0].ID, "--wait", "--timeout", "3m")
	if got := read("rb"); got != "one" {
		t.Fatalf("after the rollback: %q, want one", got)
	}
	all := list("rb")
	if len(all) != 2 || all[0].Trigger != "before-restore" {
		t.Fatalf("backups after the rollback: %+v; want the content before it backed up first", all)
	}
	// Undo the rollback.
	u.must("env", "restore", "rb", "--backup", all[0].ID, "--wait", "--timeout", "3m")
	if got := read("rb"); got != "two" {
		t.Fatalf("after undoing the rollback: %q, want two", got)
	}
	if got := read("other"); got != "theirs" {
		t.Fatalf("the other environment changed: %q", got)
	}
	u.must("env", "delete", "rb", "--wait")
	u.must("env", "delete", "other", "--wait")
}
