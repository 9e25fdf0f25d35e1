package envconfig

import (
	"context"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/compose"
)

// resolveComposeRepo resolves a Compose configuration (dev service app,
// sibling db) with devcontainer.json doc; it returns the resolution and
// the workspace directory.
func resolveComposeRepo(t *testing.T, doc string) (*Result, string) {
	t.Helper()
	repo := checkout(t, map[string]string{
		".devcontainer/devcontainer.json": doc,
		".devcontainer/data/seed.sql":     "select 1;\n",
		".devcontainer/compose.yaml": `
services:
  app:
    image: app:1
    volumes: ["../..:/workspaces:cached", "appcache:/cache", "./data:/seed:ro"]
    tmpfs: ["/scratch"]
  db:
    image: db:1
    volumes: ["dbdata:/var/lib/postgresql/data", "/anon"]
volumes: {dbdata: {}, appcache: {}}
`})
	cfg, warns := loadConfigIn(t, repo, true)
	cc, err := cfg.Compose()
	if err != nil {
		t.Fatal(err)
	}
	ws := filepath.Dir(repo)
	proj, cwarns, err := compose.LoadWithOptions(context.Background(), compose.Options{RepoDir: repo, ConfigDir: filepath.Dir(cfg.Path),
		Files: cc.Files, DevService: cc.Service, Env: map[string]string{}, AllowedCaps: Capabilities, BindRoot: ws})
	if err != nil {
		t.Fatal(err)
	}
	img := Image{Ref: "app:1", Digest: "sha256:app", Config: ImageConfig{Labels: map[string]string{}}}
	res, err := Resolve(Input{Identity: Identity{ID: "envc", Name: "n1", RepoName: "repo"}, Class: smallClass, Allow: Allow(false, true),
		Config: cfg, Warnings: warns, RepoDir: repo, Image: img,
		Compose: &ComposeInput{Project: proj, Warnings: cwarns, Images: map[string]Image{"db": {Ref: "db:1", Digest: "sha256:db", Config: ImageConfig{Cmd: []string{"postgres"}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return res, ws
}

// "SERVICE:PORT" entries are forwarded and reported against their Compose
// service (they were dropped); one naming no service is warned about;
// portsAttributes.protocol is kept (an unknown one is warned about); the
// configuration's name is kept for the status.
func TestResolvePortsServicesProtocol(t *testing.T) {
	res, _ := resolveComposeRepo(t, `{"name": "Shop dev", "dockerComposeFile": "compose.yaml", "service": "app",
	  "workspaceFolder": "/workspaces/repo",
	  "forwardPorts": [3000, "db:5432", "cache:6379", "abc"],
	  "portsAttributes": {"3000": {"label": "web", "protocol": "https"}, "5432": {"protocol": "ftp"}}}`)
	dc := res.DC
	if dc.Name != "Shop dev" {
		t.Errorf("name = %q", dc.Name)
	}
	if !slices.Equal(dc.Ports.Forward, []int{3000, 5432}) {
		t.Errorf("forward = %v, want [3000 5432]", dc.Ports.Forward)
	}
	if !reflect.DeepEqual(dc.Ports.Services, []ServicePort{{Service: "db", Port: 5432}}) || dc.Ports.Service(5432) != "db" || dc.Ports.Service(3000) != "" {
		t.Errorf("services = %+v", dc.Ports.Services)
	}
	if _, a := dc.Ports.Attributes(3000); a == nil || a.Protocol != "https" || a.Label != "web" {
		t.Errorf("3000 attributes = %+v, want label web, protocol https", a)
	}
	if _, a := dc.Ports.Attributes(5432); a == nil || a.Protocol != "" {
		t.Errorf("5432 attributes = %+v, want the unknown protocol dropped", a)
	}
	all := strings.Join(dc.Warnings, "\n")
	for _, want := range []string{`"cache:6379" names "cache", which is not a service`, `portsAttributes["5432"].protocol: "ftp" is ignored`, `forwardPorts[3]: "abc" is not a port`} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings lack %q:\n%s", want, all)
		}
	}
}

// The status lists every volume with its kind, target and service: the
// dev service's (bind from the repository shown as the environment sees
// it, named, tmpfs) and the sibling's (named, anonymous).
func TestVolumesList(t *testing.T) {
	res, ws := resolveComposeRepo(t, `{"dockerComposeFile": "compose.yaml", "service": "app", "workspaceFolder": "/workspaces/repo",
	  "mounts": ["type=volume,source=history,target=/commandhistory", "type=tmpfs,target=/tmp/x"]}`)
	got := Volumes(&res.Resolved, ws)
	want := []VolumeInfo{
		{Kind: "named", Name: "history", Target: "/commandhistory", Service: "app"},
		{Kind: "tmpfs", Target: "/tmp/x", Service: "app"},
		{Kind: "bind", Name: "/workspaces", Target: "/workspaces", Service: "app"},
		{Kind: "named", Name: "devcontainer_appcache", Target: "/cache", Service: "app"},
		{Kind: "bind", Name: "/workspaces/repo/.devcontainer/data", Target: "/seed", Service: "app"},
		{Kind: "tmpfs", Target: "/scratch", Service: "app"},
		{Kind: "named", Name: "devcontainer_dbdata", Target: "/var/lib/postgresql/data", Service: "db"},
		{Kind: "anonymous", Target: "/anon", Service: "db"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("volumes =\n%+v\nwant\n%+v", got, want)
	}
}

// A bind mount of a folder of the repository becomes a bind of that folder
// of the checkout (the runner stages it confined to the workspace).
func TestResolveRepoBind(t *testing.T) {
	repo := checkout(t, map[string]string{
		".devcontainer/devcontainer.json": `{"image": "x", "mounts": [
		  "source=${localWorkspaceFolder}/.devcontainer/data,target=/data,type=bind,readonly",
		  {"type": "bind", "source": "tools", "target": "/tools"}]}`,
		".devcontainer/data/a": "1", "tools/t": "2"})
	cfg, warns := loadConfigIn(t, repo, false)
	res, err := Resolve(Input{Identity: Identity{ID: "e1", RepoName: "repo"}, Class: smallClass, Allow: Allow(false, false),
		Config: cfg, Warnings: warns, RepoDir: repo, Image: testImage})
	if err != nil {
		t.Fatal(err)
	}
	want := []ConfigMount{
		{Type: "bind", Source: filepath.Join(repo, ".devcontainer/data"), Target: "/data", ReadOnly: true},
		{Type: "bind", Source: filepath.Join(repo, "tools"), Target: "/tools"},
	}
	if !reflect.DeepEqual(res.DC.Mounts, want) {
		t.Errorf("mounts = %+v, want %+v", res.DC.Mounts, want)
	}
}

// The features cache key does not depend on where the runner keeps the
// checkout: a repository bind's host path names the environment, so two
// environments of one repository would never share the installed layer.
func TestRepoBindFeatureKeyStable(t *testing.T) {
	doc := `{"image": "x", "features": {"./f1": {}}, "mounts": ["source=${localWorkspaceFolder}/d,target=/d,type=bind"]}`
	var inputs [][]string
	for range 2 {
		repo := checkout(t, map[string]string{".devcontainer/devcontainer.json": doc, "d/x": "1"})
		cfg, warns := loadConfigIn(t, repo, false)
		res, err := Resolve(Input{Identity: Identity{ID: "e1", RepoName: "repo"}, Class: smallClass, Allow: Allow(false, false),
			Config: cfg, Warnings: warns, RepoDir: repo, Image: testImage,
			Features: []Feature{{ID: "./f1", Metadata: []byte(`{"id":"f1","version":"1.0.0"}`)}}})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.DC.Mounts) != 1 || res.DC.Mounts[0].Source != filepath.Join(repo, "d") {
			t.Fatalf("mounts = %+v", res.DC.Mounts)
		}
		inputs = append(inputs, res.Features.Inputs)
	}
	if !reflect.DeepEqual(inputs[0], inputs[1]) {
		t.Errorf("feature inputs differ between two checkouts of one repository:\n%q\n%q", inputs[0], inputs[1])
	}
}
