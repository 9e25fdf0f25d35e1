package envconfig

import (
	"strings"
	"testing"
)

// TestContainerEnvMountRefused (review R4): mounts whose text comes from
// the container's environment after the policy check — a source
// "${containerEnv:SRC}" that looks like a folder of the repository until SRC
// (the configuration's or the image's) makes it /etc, or an image variable
// that injects ",type=bind,source=/" into a volume's options — are refused
// with a message, not mounted and not silently dropped.
func TestContainerEnvMountRefused(t *testing.T) {
	for name, c := range map[string]struct{ config, imageEnv string }{
		"source from containerEnv": {`{"image": "x", "containerEnv": {"SRC": "/etc"},
			"mounts": ["type=bind,source=${containerEnv:SRC},target=/hostetc"]}`, ""},
		"bind injected by the image's environment": {`{"image": "x",
			"mounts": ["type=volume,source=${containerEnv:V},target=/v"]}`, "V=a,type=bind,source=/,target=/host"},
	} {
		t.Run(name, func(t *testing.T) {
			repo := checkout(t, map[string]string{".devcontainer/devcontainer.json": c.config})
			cfg, _ := loadConfigIn(t, repo, false)
			img := Image{Digest: "sha256:1"}
			if c.imageEnv != "" {
				img.Config.Env = []string{c.imageEnv}
			}
			res, err := Resolve(Input{Identity: Identity{ID: "e1", Name: "n1", RepoName: "repo"}, Class: smallClass, Allow: Allow(false, false),
				Config: cfg, RepoDir: repo, Image: img})
			if err == nil {
				t.Fatalf("accepted with mounts %+v", res.Resolved.DC.Mounts)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), "mounts[0]") {
				t.Errorf("the refusal does not name the mount: %v", err)
			}
		})
	}
}
