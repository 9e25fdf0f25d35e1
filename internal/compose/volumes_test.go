package compose

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

// Short-syntax named volumes are the named volume declared at the top
// level, as docker compose reads them on Linux — a one-letter name too,
// which compose-go alone reads as a Windows drive path (an anonymous
// volume at the relative target "d:/var/lib/db").
func TestShortSyntaxNamedVolume(t *testing.T) {
	repo := writeRepo(t, map[string]string{".devcontainer/docker-compose.yml": `
services:
  app:
    image: debian
    volumes:
      - data:/var/lib/db
      - d:/srv/d
      - "cache:/root/.cache:nocopy"
      - /anon
volumes:
  data:
  d:
  cache:
    name: shared-cache
`})
	p, _, err := Load(context.Background(), repo, []string{"docker-compose.yml"}, ".devcontainer", "app", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	app, _ := p.Service("app")
	want := []Mount{
		{Type: MountVolume, Source: "devcontainer_data", Target: "/var/lib/db"},
		{Type: MountVolume, Source: "devcontainer_d", Target: "/srv/d"},
		{Type: MountVolume, Source: "shared-cache", Target: "/root/.cache"},
		{Type: MountVolume, Target: "/anon"},
	}
	if !slices.Equal(app.Volumes, want) {
		t.Errorf("volumes = %+v\nwant      %+v", app.Volumes, want)
	}
	if !slices.Equal(p.Volumes, []string{"devcontainer_d", "devcontainer_data", "shared-cache"}) {
		t.Errorf("project volumes = %v", p.Volumes)
	}
}

// A short-syntax volume naming an undeclared volume, or a target that is
// not absolute, is refused with what to do: never loaded as an anonymous
// volume at a relative path.
func TestShortSyntaxVolumeErrors(t *testing.T) {
	for _, tc := range []struct{ vol, want string }{
		{"d:/srv/d", `named volume "d" is not declared: add it under the top-level "volumes:" key`},
		{"data:relative", `target "relative" is not an absolute path`},
	} {
		repo := writeRepo(t, map[string]string{".devcontainer/docker-compose.yml": `
services:
  app:
    image: debian
    volumes: ["` + tc.vol + `"]
volumes:
  data:
`})
		_, _, err := Load(context.Background(), repo, []string{"docker-compose.yml"}, ".devcontainer", "app", nil, nil)
		msg, ok := usererr.Message(err)
		if !ok || !strings.Contains(msg, tc.want) || !strings.Contains(msg, "services.app.volumes: ") {
			t.Errorf("%s: err = %v, want a user error containing %q", tc.vol, err, tc.want)
		}
	}
}
