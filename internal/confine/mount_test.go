package confine

import (
	"os"
	"path/filepath"
	"testing"
)

// TestStageSurvivesSwap is the workspaceMount / Compose bind attack (F5,
// F6): once a directory is staged, replacing its path with a symlink to the
// host's / changes nothing at the staging point, which is what the runtime
// mounts.
func TestStageSurvivesSwap(t *testing.T) {
	requireRoot(t)
	ws := t.TempDir()
	secret := secretDir(t)
	write(t, filepath.Join(ws, "repo/README"), "mine")
	wsDir := openDir(t, ws)
	repo, err := wsDir.OpenDir("repo", Beneath)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	target := filepath.Join(t.TempDir(), "stage")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Stage(repo, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Unstage(target) })
	// The environment swaps its checkout for a link to a host directory.
	if err := os.Rename(filepath.Join(ws, "repo"), filepath.Join(ws, "repo.orig")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(ws, "repo")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(target, "README")); err != nil || string(b) != "mine" {
		t.Fatalf("staged README: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(target, "ssh_user_ca")); err == nil {
		t.Fatal("staging shows the host directory")
	}
	// Resolving the swapped path again refuses the link.
	if d, err := wsDir.OpenDir("repo", Beneath); err == nil {
		d.Close()
		t.Fatal("Beneath opened the swapped symlink")
	}
	// Staging again replaces the mount; unstaging leaves an empty dir.
	if err := Stage(repo, target); err != nil {
		t.Fatal(err)
	}
	if err := Unstage(target); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Fatalf("still mounted after Unstage: %v", ents)
	}
	if err := Unstage(target); err != nil {
		t.Fatalf("unstaging twice: %v", err)
	}
}
