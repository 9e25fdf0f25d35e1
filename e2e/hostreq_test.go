package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestHostRequirementsStorage: the runner's class advertises a real disk
// size (it advertised 0, so any hostRequirements.storage failed): a small
// storage requirement, written in upper case, is met; one no disk has is
// refused in human units; a size that is not one is refused with its
// position.
func TestHostRequirementsStorage(t *testing.T) {
	requireTools(t)
	c := newCluster(t)
	u := c.user
	bb := images(t) + "/test/busybox:latest"
	small := gitRepo(t, filepath.Join(c.dir, "small"), map[string]string{
		".devcontainer/devcontainer.json": `{"image": "` + bb + `", "hostRequirements": {"storage": "1MB"}}`,
	})
	u.must("env", "create", small, "--name", "small", "--wait", "--timeout", "3m")

	huge := gitRepo(t, filepath.Join(c.dir, "huge"), map[string]string{
		".devcontainer/devcontainer.json": `{"image": "` + bb + `", "hostRequirements": {"storage": "1000tb"}}`,
	})
	_, errOut, code := u.run("env", "create", huge, "--name", "huge", "--wait", "--timeout", "3m")
	t.Logf("huge: %s", errOut)
	if code == 0 || !strings.Contains(errOut, "1000 TB of storage") || !strings.Contains(errOut, "GB storage") && !strings.Contains(errOut, "TB storage") {
		t.Fatalf("create needing 1000 TB: exit %d %s", code, errOut)
	}

	bad := gitRepo(t, filepath.Join(c.dir, "bad"), map[string]string{
		".devcontainer/devcontainer.json": `{"image": "` + bb + `",
  "hostRequirements": {"storage": "64 gigs"}}`,
	})
	_, errOut, code = u.run("env", "create", bad, "--name", "bad", "--wait", "--timeout", "3m")
	t.Logf("bad: %s", errOut)
	if code == 0 || !strings.Contains(errOut, `"64 gigs" is not a size`) {
		t.Fatalf("create with a malformed size: exit %d %s", code, errOut)
	}
}
