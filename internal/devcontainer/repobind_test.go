package devcontainer

import (
	"strings"
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

func TestRepoBindSource(t *testing.T) {
	ws := "/w/repo"
	for src, want := range map[string]string{
		"/w/repo/.devcontainer/data": ".devcontainer/data", "/w/repo": ".", "/w/repo/a/../b": "b",
		".devcontainer/data": ".devcontainer/data", "./x": "x",
	} {
		if got, ok := RepoBindSource(src, ws); !ok || got != want {
			t.Errorf("RepoBindSource(%q) = %q, %v; want %q", src, got, ok, want)
		}
	}
	for _, src := range []string{"/etc", "/w/repo/../../etc", "/w/repo/../other", "/w/repository", "../x", "a/../../x", "", "/w/repo/\x00"} {
		if got, ok := RepoBindSource(src, ws); ok {
			t.Errorf("RepoBindSource(%q) = %q, allowed; want refused", src, got)
		}
	}
}

// A bind mount of a folder of the repository is accepted; host paths and
// paths that climb out of the repository stay refused, each with where it
// is written and what to do instead.
func TestCheckRepoBindMounts(t *testing.T) {
	c, _, err, _ := load(t, `{"image": "a", "mounts": [
  "source=${localWorkspaceFolder}/.devcontainer/data,target=/data,type=bind",
  {"type": "bind", "source": ".devcontainer/seed", "target": "/seed", "readonly": true}]}`, LoadOptions{})
	if err != nil {
		t.Fatalf("repository binds refused: %v", err)
	}
	m, err := Merge(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Check(Allow{}); err != nil {
		t.Errorf("merged check refused repository binds: %v", err)
	}
	_, _, err, _ = load(t, `{"image": "a", "mounts": [
  "source=${localWorkspaceFolder}/../../etc,target=/e,type=bind",
  "source=/etc,target=/e2,type=bind"]}`, LoadOptions{})
	msg, ok := usererr.Message(err)
	if !ok {
		t.Fatalf("escaping binds: err = %v, want a user error", err)
	}
	for _, want := range []string{"devcontainer.json:2:3: mounts[0]", "devcontainer.json:3:3: mounts[1]", `bind mount of host path "/etc"`, "only folders of the repository", "${localWorkspaceFolder}/.devcontainer/data"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
}
