package runner

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/covedev/cove/internal/compose"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/testutil"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestResolveCommand(t *testing.T) {
	ep, cmd := []string{"/entry.sh"}, []string{"postgres"}
	tests := []struct {
		name             string
		entrypoint, comm []string
		want             []string
	}{
		{"image's", nil, nil, []string{"/entry.sh", "postgres"}},
		{"command replaces CMD", nil, []string{"sleep", "1"}, []string{"/entry.sh", "sleep", "1"}},
		{"entrypoint drops CMD", []string{"/bin/sh"}, nil, []string{"/bin/sh"}},
		{"both", []string{"/bin/sh", "-c"}, []string{"echo hi"}, []string{"/bin/sh", "-c", "echo hi"}},
		{"empty entrypoint clears it", []string{}, nil, []string{}},
	}
	for _, tt := range tests {
		if got := resolveCommand(ep, cmd, tt.entrypoint, tt.comm); !reflect.DeepEqual(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"PATH=/bin", "A=1", "B=$A"}, map[string]string{"A": "2", "C": "$PATH"})
	want := []string{"PATH=/bin", "B=$A", "A=2", "C=$PATH"} // compose values are not expanded again
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mergeEnv = %q, want %q", got, want)
	}
}

func TestImageHealthcheck(t *testing.T) {
	if imageHealthcheck(image.Config{}) != nil {
		t.Error("no HEALTHCHECK should give nil")
	}
	hc := imageHealthcheck(image.Config{Healthcheck: &v1.HealthConfig{Test: []string{"CMD-SHELL", "true"}, Interval: time.Second}})
	want := &compose.Healthcheck{Test: []string{"CMD-SHELL", "true"}, Interval: time.Second, Timeout: compose.DefaultHealthTimeout, Retries: compose.DefaultHealthRetries}
	if !reflect.DeepEqual(hc, want) {
		t.Errorf("imageHealthcheck = %+v, want %+v", hc, want)
	}
}

func TestServiceMounts(t *testing.T) {
	s := compose.Service{Name: "db", Volumes: []compose.Mount{
		{Type: compose.MountVolume, Source: "data", Target: "/var/lib/data"},
		{Type: compose.MountVolume, Target: "/cache/x"},
		{Type: compose.MountBind, Source: "/w/repo", Target: "/src", ReadOnly: true},
		{Type: compose.MountTmpfs, Target: "/run"},
	}}
	want := []dcMount{
		{Type: "volume", Source: "data", Target: "/var/lib/data"},
		{Type: "volume", Source: "anon-db-cache-x", Target: "/cache/x"},
		{Type: "bind", Source: "/w/repo", Target: "/src", ReadOnly: true},
		{Type: "tmpfs", Target: "/run"},
	}
	if got := serviceMounts(s); !reflect.DeepEqual(got, want) {
		t.Errorf("serviceMounts = %+v, want %+v", got, want)
	}
}

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
		if d, err := volumeDir(lay, dcMount{Type: "volume", Source: bad, Target: "/v"}); err == nil {
			t.Errorf("volume name %q accepted: %s", bad, d)
		}
	}
	for _, good := range []string{"data", "my-vol_1", "x.y", "e1-bashhistory"} {
		d, err := volumeDir(lay, dcMount{Type: "volume", Source: good, Target: "/v"})
		if err != nil || d != "/data/envs/e1/volumes/"+good {
			t.Errorf("volume name %q: %q, %v", good, d, err)
		}
	}
	// Anonymous volumes are named after their target.
	if d, err := volumeDir(lay, dcMount{Type: "volume", Target: "/var/lib/x"}); err != nil || d != "/data/envs/e1/volumes/anon-var-lib-x" {
		t.Errorf("anonymous volume: %q, %v", d, err)
	}
	st := &envState{Image: imageState{DC: &dcState{Mounts: []dcMount{{Type: "volume", Source: "..", Target: "/envdir"}}}}}
	if err := checkVolumes(lay, st); err == nil || !strings.Contains(err.Error(), `".."`) {
		t.Errorf("checkVolumes: %v", err)
	}
}

func idmapRange(host uint32) idmap.Range { return idmap.Range{HostID: host, Size: 65536} }
