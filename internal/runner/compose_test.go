package runner

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/testutil"
)

// TestMakeVolume: a new volume starts with the image's content at its
// target (ownership kept); an existing one is left alone; no content makes
// an empty directory owned by the environment's root.
func TestMakeVolume(t *testing.T) {
	testutil.RequireRoot(t, "to set file owners")
	root := t.TempDir()
	data := filepath.Join(root, "rootfs", "var", "lib", "db")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "conf"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, 100999, 100999); err != nil {
		t.Fatal(err)
	}
	st := &envState{Header: envdir.Header{IDMap: idmapRange(100000)}}
	vol := filepath.Join(root, "volumes", "db")
	if err := makeVolume(vol, st, filepath.Join(root, "rootfs"), "/var/lib/db"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(vol)
	if err != nil {
		t.Fatal(err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 100999 || fi.Mode().Perm() != 0o700 {
		t.Errorf("volume dir: uid %d mode %v; want the image dir's 100999 0700", uid, fi.Mode().Perm())
	}
	if b, err := os.ReadFile(filepath.Join(vol, "conf")); err != nil || string(b) != "x" {
		t.Errorf("volume content: %q %v", b, err)
	}
	// Existing: untouched.
	if err := os.Remove(filepath.Join(vol, "conf")); err != nil {
		t.Fatal(err)
	}
	if err := makeVolume(vol, st, filepath.Join(root, "rootfs"), "/var/lib/db"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(vol, "conf")); err == nil {
		t.Error("an existing volume was filled again")
	}
	// Nothing at the target: empty, owned by the environment's root.
	empty := filepath.Join(root, "volumes", "empty")
	if err := makeVolume(empty, st, filepath.Join(root, "rootfs"), "/nothing"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(empty); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 100000 {
		t.Errorf("empty volume: %v %v", fi, err)
	}
	// A target the image (or the environment) linked to a host directory:
	// resolved inside the root file system, never copied from the host.
	host := filepath.Join(root, "host-secret")
	if err := os.MkdirAll(host, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(host, "ssh_user_ca"), []byte("HOST-SECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"abs": host, "rel": "../../host-secret"} {
		if err := os.Symlink(target, filepath.Join(root, "rootfs", name)); err != nil {
			t.Fatal(err)
		}
		vol := filepath.Join(root, "volumes", "link-"+name)
		if err := makeVolume(vol, st, filepath.Join(root, "rootfs"), "/"+name); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(vol, "ssh_user_ca")); err == nil {
			t.Errorf("volume %s copied the host directory its target links to", name)
		}
	}
}

// TestVolumeNames is F7 of the 2026-12 review: a volume named ".." (or a
// path) would mount the environment's runner directory; names are Docker's.
func TestVolumeNames(t *testing.T) {
	lay := envdir.Layout{Dir: "/data/envs/e1"}
	for _, bad := range []string{"..", ".", "a/../..", "../x", "/etc", "x\x00y", "-x", "a"} {
		if d, err := volumeDir(lay, envconfig.ConfigMount{Type: "volume", Source: bad, Target: "/v"}); err == nil {
			t.Errorf("volume name %q accepted: %s", bad, d)
		}
	}
	for _, good := range []string{"data", "my-vol_1", "x.y", "e1-bashhistory"} {
		d, err := volumeDir(lay, envconfig.ConfigMount{Type: "volume", Source: good, Target: "/v"})
		if err != nil || d != "/data/envs/e1/volumes/"+good {
			t.Errorf("volume name %q: %q, %v", good, d, err)
		}
	}
	// Anonymous volumes are named after their target.
	if d, err := volumeDir(lay, envconfig.ConfigMount{Type: "volume", Target: "/var/lib/x"}); err != nil || d != "/data/envs/e1/volumes/anon-var-lib-x" {
		t.Errorf("anonymous volume: %q, %v", d, err)
	}
	st := &envState{Image: envconfig.Resolved{DC: &envconfig.DevcontainerState{Mounts: []envconfig.ConfigMount{{Type: "volume", Source: "..", Target: "/envdir"}}}}}
	if err := envconfig.CheckVolumes(&st.Image); err == nil || !strings.Contains(err.Error(), `".."`) {
		t.Errorf("CheckVolumes: %v", err)
	}
}

func idmapRange(host uint32) idmap.Range { return idmap.Range{HostID: host, Size: 65536} }
