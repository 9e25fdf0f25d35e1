package envconfig

import (
	"strings"
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

// TestVolumeNames is F7 of the 2026-12 review: a volume named ".." (or a
// path) would make the runner mount a directory of its own (the
// environment's directory, holding its state and keys) into the
// environment. Names are Docker's; anonymous volumes are named after their
// target.
func TestVolumeNames(t *testing.T) {
	for _, bad := range []string{"..", ".", "a/../..", "../x", "/etc", "x\x00y", "-x", "a", "a b"} {
		name, err := VolumeName(ConfigMount{Type: "volume", Source: bad, Target: "/v"})
		if _, ok := usererr.Message(err); !ok {
			t.Errorf("volume name %q: %q, %v; want a user error", bad, name, err)
		}
	}
	for _, good := range []string{"data", "my-vol_1", "x.y", "e1-bashhistory", "devcontainer_dbdata"} {
		if name, err := VolumeName(ConfigMount{Type: "volume", Source: good, Target: "/v"}); err != nil || name != good {
			t.Errorf("volume name %q: %q, %v", good, name, err)
		}
	}
	for target, want := range map[string]string{"/var/lib/x": "anon-var-lib-x", "/cache/": "anon-cache", "/": "anon-", "/a/../..": "anon-a-..-.."} {
		if name, err := VolumeName(ConfigMount{Type: "volume", Target: target}); err != nil || name != want {
			t.Errorf("anonymous volume at %q: %q, %v; want %q", target, name, err, want)
		}
	}
	if _, err := VolumeName(ConfigMount{Type: "volume", Target: "/x\x00y"}); err == nil {
		t.Error("an anonymous volume's name with a NUL accepted")
	}
}

// TestVolumeNameAttack performs F7 at each point a name reaches the
// runner: resolution refuses the configuration before anything starts,
// and a state written before names were checked yields no machine (so
// nothing is mounted).
func TestVolumeNameAttack(t *testing.T) {
	const msg = `volume name ".." (mounted at /envdir) is not valid`
	evil := ConfigMount{Type: "volume", Source: "..", Target: "/envdir"}
	for name, r := range map[string]*Resolved{
		"dev container": {DC: &DevcontainerState{Mounts: []ConfigMount{{Type: "tmpfs", Target: "/t"}, evil}}},
		"service": {DC: &DevcontainerState{}, Compose: &ComposeState{DevService: "app", Order: []string{"app", "db"},
			Services: []ServiceState{{Name: "db", Command: []string{"x"}, Mounts: []ConfigMount{evil}}}}},
	} {
		err := CheckVolumes(r)
		if m, ok := usererr.Message(err); !ok || !strings.HasPrefix(m, msg) {
			t.Errorf("%s: CheckVolumes = %v, want the user error %q…", name, err, msg)
		}
		ms, err := Machines(Identity{ID: "e1", Name: "n"}, r, Options{Networked: true})
		if m, ok := usererr.Message(err); !ok || !strings.Contains(m, msg) || ms != nil {
			t.Errorf("%s: Machines = %d machines, %v; want none and the user error", name, len(ms), err)
		}
	}
	// In devcontainer.json (a config's mounts reach the state through
	// Resolve).
	cfg := loadConfig(t, map[string]string{".devcontainer/devcontainer.json": `{"image": "x", "mounts": ["type=volume,source=..,target=/envdir"]}`})
	res, err := Resolve(Input{Identity: Identity{ID: "e1", RepoName: "repo"}, Allow: Allow(false, false), Config: cfg, Image: Image{Ref: "x"}})
	if m, ok := usererr.Message(err); !ok || !strings.HasPrefix(m, msg) || res != nil {
		t.Errorf("Resolve = %+v, %v; want no result and the user error", res, err)
	}
}
