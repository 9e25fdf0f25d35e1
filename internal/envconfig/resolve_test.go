package envconfig

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/compose"
	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/usererr"
)

// The expected values in these tests were taken from what the runner's
// own resolution (applyDevcontainer, loadCompose, applyComposeDev)
// produced for the same inputs before it moved here.

// checkout writes files into a new repository directory ".../repo".
func checkout(t *testing.T, files map[string]string) string {
	t.Helper()
	repo := filepath.Join(t.TempDir(), "workspace", "repo")
	for p, c := range files {
		full := filepath.Join(repo, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return repo
}

// loadConfigIn loads repo's devcontainer.json as the runner does.
func loadConfigIn(t *testing.T, repo string, compose bool) (*devcontainer.Config, []devcontainer.Warning) {
	t.Helper()
	cfg, warns, err := devcontainer.Load(repo, "", devcontainer.LoadOptions{LocalWorkspaceFolder: repo, DevcontainerID: "e1",
		Allow: Allow(false, compose), LocalEnv: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, warns
}

func loadConfig(t *testing.T, files map[string]string) *devcontainer.Config {
	cfg, _ := loadConfigIn(t, checkout(t, files), false)
	return cfg
}

// jsonOf is v as indented JSON with dir replaced by "REPO".
func jsonOf(t *testing.T, v any, dir string) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), dir, "REPO")
}

func sameJSON(t *testing.T, what, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: want: %v", what, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\ngot  %s\nwant %s", what, got, want)
	}
}

var testImage = Image{Ref: "example.com/img:1", Digest: "sha256:abc", Layers: []string{"/l/1"}, Config: ImageConfig{
	User: "imgu", Env: []string{"PATH=/usr/bin:/bin", "HOME=/root"}, Entrypoint: []string{"/init"}, Cmd: []string{"serve", "-x"},
	WorkingDir: "/srv", Labels: map[string]string{}}}

func withLabel(img Image, label string) Image {
	img.Config.Labels = map[string]string{"devcontainer.metadata": label}
	return img
}

const testLabel = `[{"containerEnv":{"IMG":"1","P2":"${containerEnv:PATH}:/img"},"postCreateCommand":"echo img","remoteUser":"imguser",` +
	`"customizations":{"vscode":{"extensions":["img.ext"]}},"forwardPorts":[9000]}]`

var smallClass = &Class{ID: "small", CPUs: 2, MemoryBytes: 4 << 30, DiskBytes: 20 << 30, Pids: 4096}

func TestResolveWithoutDevcontainer(t *testing.T) {
	res, err := Resolve(Input{Identity: Identity{ID: "e1", RepoName: "repo"}, Allow: Allow(false, false), Image: testImage,
		Warnings: []devcontainer.Warning{{Pos: "f:1:1", Message: "m"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := &Result{Resolved: Resolved{Ref: "example.com/img:1", Digest: "sha256:abc", Layers: []string{"/l/1"}, User: "imgu", Env: testImage.Config.Env,
		DC: &DevcontainerState{WorkspaceFolder: "/workspaces/repo", Warnings: []string{"f:1:1: m"}}}}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("Resolve = %+v, want %+v", res, want)
	}
}

func TestResolveDevcontainer(t *testing.T) {
	repo := checkout(t, map[string]string{".devcontainer/devcontainer.json": `{
  "image": "x",
  "containerEnv": {"FOO": "bar", "PATH": "/opt/bin:${PATH}", "REF": "$HOME/x", "LATER": "${containerEnv:PATH}", "ODD": "${foo:bar}"},
  "remoteEnv": {"R1": "v1", "R0": null, "RP": "${containerEnv:FOO}-r"},
  "runArgs": ["--hostname", "myhost", "--add-host", "db:10.0.0.2", "--add-host=v6:::1", "-e", "RUNE=1", "--env", "FOO=fromrun"],
  "forwardPorts": [3000, "db:5432", "localhost:8080"],
  "appPort": [7000],
  "portsAttributes": {"3000": {"label": "web", "onAutoForward": "notify"}, "4000-4010": {"label": "range"}},
  "otherPortsAttributes": {"onAutoForward": "ignore"},
  "mounts": ["type=volume,source=cache,target=/cache", {"type": "tmpfs", "target": "/tmp/x"}, "type=volume,target=/anon,readonly"],
  "containerUser": "cuser",
  "userEnvProbe": "loginShell",
  "overrideCommand": false,
  "onCreateCommand": "echo create",
  "updateContentCommand": ["echo", "update"],
  "postCreateCommand": {"b": "echo b", "a": ["echo", "a"]},
  "postStartCommand": "echo start",
  "postAttachCommand": "echo attach",
  "waitFor": "postCreateCommand",
  "customizations": {"vscode": {"extensions": ["a.b", "c.d"], "settings": {"x": 1}}, "other": {"k": "v"}},
  "workspaceFolder": "/work/here",
  "workspaceMount": "source=${localWorkspaceFolder},target=/src,type=bind",
  "hostRequirements": {"cpus": 1, "memory": "1gb"}
}`})
	cfg, warns := loadConfigIn(t, repo, false)
	res, err := Resolve(Input{Identity: Identity{ID: "e1", Name: "n1", RepoName: "repo"}, Class: smallClass, Allow: Allow(false, false),
		Config: cfg, Warnings: warns, RepoDir: repo, Image: withLabel(testImage, testLabel)})
	if err != nil {
		t.Fatal(err)
	}
	if res.User != "imguser" || !reflect.DeepEqual(res.Env, testImage.Config.Env) || res.Compose != nil || res.Features != nil {
		t.Errorf("user %q, env %q, compose %+v, features %+v", res.User, res.Env, res.Compose, res.Features)
	}
	sameJSON(t, "devcontainer", jsonOf(t, res.DC, repo), `{
  "configPath": ".devcontainer/devcontainer.json",
  "workspaceFolder": "/work/here",
  "mountTarget": "/src",
  "mounts": [
    {"type": "volume", "source": "cache", "target": "/cache"},
    {"type": "tmpfs", "target": "/tmp/x"},
    {"type": "volume", "target": "/anon", "readOnly": true}
  ],
  "ports": {
    "forward": [9000, 3000, 8080, 7000],
    "attrs": {"3000": {"label": "web", "onAutoForward": "notify"}, "4000-4010": {"label": "range"}},
    "other": {"onAutoForward": "ignore"}
  },
  "command": ["/init", "serve", "-x"],
  "workingDir": "/srv",
  "hostname": "myhost",
  "addHosts": ["db:10.0.0.2", "v6:::1"],
  "remoteUser": "imguser",
  "containerEnv": ["PATH=/opt/bin:/usr/bin:/bin", "HOME=/root", "FOO=fromrun", "IMG=1", "LATER=${containerEnv:PATH}", "ODD=${foo:bar}",
    "P2=${containerEnv:PATH}:/img", "REF=/root/x", "RUNE=1"],
  "remoteEnv": ["R1=v1", "RP=fromrun-r"],
  "userEnvProbe": "loginShell",
  "hooks": {
    "Initialize": null,
    "OnCreate": [{"Shell": "echo create", "Args": null, "Parallel": null, "Origin": "devcontainer.json"}],
    "UpdateContent": [{"Shell": "", "Args": ["echo", "update"], "Parallel": null, "Origin": "devcontainer.json"}],
    "PostCreate": [
      {"Shell": "echo img", "Args": null, "Parallel": null, "Origin": "image metadata"},
      {"Shell": "", "Args": null, "Parallel": {
        "a": {"Shell": "", "Args": ["echo", "a"], "Parallel": null, "Origin": ""},
        "b": {"Shell": "echo b", "Args": null, "Parallel": null, "Origin": ""}}, "Origin": "devcontainer.json"}
    ],
    "PostStart": [{"Shell": "echo start", "Args": null, "Parallel": null, "Origin": "devcontainer.json"}],
    "PostAttach": [{"Shell": "echo attach", "Args": null, "Parallel": null, "Origin": "devcontainer.json"}],
    "WaitFor": "postCreateCommand"
  },
  "warnings": [".devcontainer/devcontainer.json:7:3: appPort is deprecated: its ports are forwarded like forwardPorts, not published on the runner",
    "containerEnv.LATER: ${containerEnv:PATH} is kept as written: ${containerEnv:...} is defined in remoteEnv and lifecycle commands, not inside containerEnv (as in the reference CLI); write ${PATH} to build on the image's value, or set LATER in remoteEnv",
    "containerEnv.ODD: ${foo:bar} kept as written: only variables the image or a feature sets are expanded (the reference CLI expands none); set the variable in the image, or drop the reference",
    "containerEnv.P2: ${containerEnv:PATH} is kept as written: ${containerEnv:...} is defined in remoteEnv and lifecycle commands, not inside containerEnv (as in the reference CLI); write ${PATH} to build on the image's value, or set P2 in remoteEnv",
    "forwardPorts: \"db:5432\" names \"db\", but only Docker Compose configurations have services; the port is not forwarded (write 5432 for the dev container's port)"],
  "extensions": ["img.ext", "a.b", "c.d"],
  "customizations": "{\"other\":[{\"k\":\"v\"}],\"vscode\":[{\"extensions\":[\"img.ext\"]},{\"extensions\":[\"a.b\",\"c.d\"],\"settings\":{\"x\":1}}]}"
}`)
}

func TestResolveFeatures(t *testing.T) {
	repo := checkout(t, map[string]string{".devcontainer/devcontainer.json": `{"image":"x","features":{"./f1":{"opt":"v"},"./f2":true},` +
		`"remoteUser":"ru","mounts":["type=volume,source=v1,target=/v1"]}`})
	cfg, warns := loadConfigIn(t, repo, false)
	// The features' metadata as the features package resolves it (in
	// install order).
	feats := []Feature{
		{ID: "./f1", Metadata: []byte(`{"id":"f1","version":"1.0.0","name":"F1","options":{"opt":{"type":"string","default":"d"}},` +
			`"containerEnv":{"F1":"1","PATH":"/f1/bin:${PATH}"},"mounts":[{"type":"volume","source":"f1vol","target":"/f1v"}],` +
			`"entrypoint":"/usr/local/share/f1.sh","customizations":{"vscode":{"extensions":["f1.ext"]}},"postCreateCommand":"echo f1"}`)},
		{ID: "./f2", Metadata: []byte(`{"id":"f2","version":"2.0.0","name":"F2","entrypoint":"/f2.sh","installsAfter":["f1"]}`)},
	}
	id := Identity{ID: "e1", Name: "n1", RepoName: "repo", OrganizationID: "org1", GitURL: "https://example.com/o/repo.git/"}
	res, err := Resolve(Input{Identity: id, Class: smallClass, Allow: Allow(false, false), Config: cfg, Warnings: warns,
		RepoDir: repo, Image: withLabel(testImage, testLabel), Features: feats})
	if err != nil {
		t.Fatal(err)
	}
	want := &FeatureInstall{Scope: "org:org1|repo:https://example.com/o/repo", RemoteUser: "ru", ContainerUser: "", Inputs: []string{
		"image=sha256:abc", "user=ru", "containerUser=",
		"containerEnv=PATH=/f1/bin:/usr/bin:/bin\x00HOME=/root\x00F1=1\x00IMG=1\x00P2=${containerEnv:PATH}:/img", "remoteEnv=", "command=",
		"entrypoints=/usr/local/share/f1.sh\x00/f2.sh", "workingDir=/srv", "mounts=volume:f1vol:/f1v:false\x00volume:v1:/v1:false",
		"workspaceFolder=/workspaces/repo", "mountTarget="}}
	if !reflect.DeepEqual(res.Features, want) {
		t.Errorf("Features =\n%q\nwant\n%q", res.Features, want)
	}
	if res.User != "ru" || res.DC.FeaturesKey != "" || res.DC.FeaturesPending {
		t.Errorf("user %q; resolution set the step's markers: %+v", res.User, res.DC)
	}
	sameJSON(t, "devcontainer", jsonOf(t, res.DC, repo), `{
  "configPath": ".devcontainer/devcontainer.json",
  "workspaceFolder": "/workspaces/repo",
  "mounts": [{"type": "volume", "source": "f1vol", "target": "/f1v"}, {"type": "volume", "source": "v1", "target": "/v1"}],
  "ports": {"forward": [9000]},
  "entrypoints": ["/usr/local/share/f1.sh", "/f2.sh"],
  "workingDir": "/srv",
  "remoteUser": "ru",
  "containerEnv": ["PATH=/f1/bin:/usr/bin:/bin", "HOME=/root", "F1=1", "IMG=1", "P2=${containerEnv:PATH}:/img"],
  "userEnvProbe": "loginInteractiveShell",
  "warnings": ["containerEnv.P2: ${containerEnv:PATH} is kept as written: ${containerEnv:...} is defined in remoteEnv and lifecycle commands, not inside containerEnv (as in the reference CLI); write ${PATH} to build on the image's value, or set P2 in remoteEnv"],
  "hooks": {
    "Initialize": null, "OnCreate": [], "UpdateContent": [],
    "PostCreate": [
      {"Shell": "echo img", "Args": null, "Parallel": null, "Origin": "image metadata"},
      {"Shell": "echo f1", "Args": null, "Parallel": null, "Origin": "./f1"}
    ],
    "PostStart": [], "PostAttach": [], "WaitFor": "updateContentCommand"
  },
  "extensions": ["img.ext", "f1.ext"],
  "customizations": "{\"vscode\":[{\"extensions\":[\"img.ext\"]},{\"extensions\":[\"f1.ext\"]}]}"
}`)
	// A project scopes the cache instead of the repository.
	id.ProjectID = "p1"
	if s := FeatureScope(id); s != "org:org1|project:p1" {
		t.Errorf("FeatureScope with a project = %q", s)
	}
}

func TestResolveCompose(t *testing.T) {
	repo := checkout(t, map[string]string{
		".devcontainer/devcontainer.json": `{"dockerComposeFile":"compose.yaml","service":"app","workspaceFolder":"/workspaces/repo",` +
			`"features":{"./f1":{}},"containerEnv":{"X":"${APPENV}"},"postStartCommand":"echo s"}`,
		".devcontainer/compose.yaml": `
services:
  app:
    image: app:1
    environment: {APPENV: "a1"}
    user: dev
    working_dir: /code
    command: ["sleep", "infinity"]
    hostname: apphost
    extra_hosts: ["h1:1.1.1.1"]
    volumes: ["../..:/workspaces:cached", "appcache:/cache"]
    ports: ["3000:3000"]
    depends_on: {db: {condition: service_healthy}}
  db:
    image: db:1
    environment: {POSTGRES_PASSWORD: "p"}
    volumes: ["dbdata:/var/lib/postgresql/data", "/anon"]
    ports: ["5432"]
    healthcheck: {test: ["CMD-SHELL", "pg_isready"], interval: 2s}
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
	appImg := Image{Ref: "app:1", Digest: "sha256:app", Layers: []string{"/la"}, Config: ImageConfig{User: "root", Env: []string{"PATH=/bin"},
		Entrypoint: []string{"/ep"}, Cmd: []string{"x"}, Labels: map[string]string{}}}
	dbImg := Image{Ref: "db:1", Digest: "sha256:db", Layers: []string{"/ld"}, Config: ImageConfig{Env: []string{"PATH=/usr/bin", "PGDATA=/d"},
		Entrypoint: []string{"docker-entrypoint.sh"}, Cmd: []string{"postgres"}}}
	in := Input{Identity: Identity{ID: "envc", Name: "n1", RepoName: "repo", OrganizationID: "org1", GitURL: "https://example.com/o/repo"},
		Class: smallClass, Allow: Allow(false, true), Config: cfg, Warnings: warns, RepoDir: repo, Image: appImg,
		Features: []Feature{{ID: "./f1", Metadata: []byte(`{"id":"f1","version":"1.0.0","name":"F1","entrypoint":"/f1.sh"}`)}},
		Compose:  &ComposeInput{Project: proj, Warnings: cwarns, Images: map[string]Image{"db": dbImg}}}
	res, err := Resolve(in)
	if err != nil {
		t.Fatal(err)
	}
	if res.User != "dev" || !reflect.DeepEqual(res.Env, []string{"PATH=/bin", "APPENV=a1"}) || res.Ref != "app:1" || res.Digest != "sha256:app" ||
		!reflect.DeepEqual(res.Layers, []string{"/la"}) {
		t.Errorf("image %+v: want the dev service's", res.Resolved)
	}
	// The features' inputs are the devcontainer's before the dev service's
	// volumes and ports join it.
	if got := res.Features.Inputs; got[0] != "image=sha256:app" || got[5] != "command=/ep\x00sleep\x00infinity" || got[8] != "mounts=" {
		t.Errorf("feature inputs %q", got)
	}
	sameJSON(t, "devcontainer", jsonOf(t, res.DC, ws), `{
  "configPath": ".devcontainer/devcontainer.json",
  "workspaceFolder": "/workspaces/repo",
  "mounts": [{"type": "bind", "source": "REPO", "target": "/workspaces"}, {"type": "volume", "source": "devcontainer_appcache", "target": "/cache"}],
  "ports": {"forward": [3000, 5432]},
  "entrypoints": ["/f1.sh"],
  "command": ["/ep", "sleep", "infinity"],
  "workingDir": "/code",
  "hostname": "apphost",
  "addHosts": ["h1:1.1.1.1"],
  "remoteUser": "dev",
  "containerEnv": ["PATH=/bin", "APPENV=a1", "X=a1"],
  "userEnvProbe": "loginInteractiveShell",
  "hooks": {"Initialize": null, "OnCreate": [], "UpdateContent": [], "PostCreate": [],
    "PostStart": [{"Shell": "echo s", "Args": null, "Parallel": null, "Origin": "devcontainer.json"}], "PostAttach": [], "WaitFor": "updateContentCommand"},
  "warnings": ["service \"app\": ports: published ports are reported as environment ports, not bound on the host"]
}`)
	sameJSON(t, "compose", jsonOf(t, res.Compose, ws), `{
  "project": "devcontainer", "devService": "app", "order": ["db", "app"], "devDependsOn": {"db": "healthy"},
  "services": [{
    "name": "db", "image": "db:1", "imageDigest": "sha256:db", "layers": ["/ld"],
    "env": ["PATH=/usr/bin", "PGDATA=/d", "POSTGRES_PASSWORD=p"],
    "command": ["docker-entrypoint.sh", "postgres"], "hostname": "db",
    "mounts": [{"type": "volume", "source": "devcontainer_dbdata", "target": "/var/lib/postgresql/data"}, {"type": "volume", "source": "anon-db-anon", "target": "/anon"}],
    "healthcheck": {"Test": ["CMD-SHELL", "pg_isready"], "Interval": 2000000000, "Timeout": 30000000000, "StartPeriod": 0, "Retries": 3}
  }]
}`)

	// A sibling without an image is the caller's mistake, not the user's.
	in.Compose.Images = nil
	if _, err := Resolve(in); err == nil {
		t.Error("a service without an image resolved")
	} else if _, ok := usererr.Message(err); ok {
		t.Errorf("missing image reported as the user's error: %v", err)
	}
}

// TestResolveRefuses: what cove cannot run is a user error naming why,
// and no resolution.
func TestResolveRefuses(t *testing.T) {
	plain := map[string]string{".devcontainer/devcontainer.json": `{"image":"x"}`}
	big := map[string]string{".devcontainer/devcontainer.json": `{"image":"x","hostRequirements":{"cpus":64}}`}
	tests := []struct {
		name  string
		files map[string]string
		label string
		class *Class
		want  string // the message's beginning, after the config's path
	}{
		{"class too small", big, "", smallClass,
			`class "small" does not meet devcontainer.json's hostRequirements: needs 64 CPUs; class small has 2; create the environment with a larger class`},
		{"storage in human units", map[string]string{".devcontainer/devcontainer.json": `{"image":"x","hostRequirements":{"storage":"64GB"}}`}, "", smallClass,
			`class "small" does not meet devcontainer.json's hostRequirements: needs 64 GB of storage; class small has 20 GB;`},
		{"malformed size", map[string]string{".devcontainer/devcontainer.json": `{"image":"x","hostRequirements":{"storage":"64 GB"}}`}, "", smallClass,
			`.devcontainer/devcontainer.json:1:34: hostRequirements.storage: "64 GB" is not a size: write a whole number with an optional unit kb, mb, gb or tb`},
		{"privileged image", plain, `{"privileged":true}`, nil,
			".devcontainer/devcontainer.json with its image's and features' metadata: cove cannot run this dev container configuration:\n  - the image's metadata (label devcontainer.metadata): privileged: privileged mode gives the environment every capability"},
		{"capability from the image", plain, `[{"capAdd":["SYS_ADMIN"]}]`, nil,
			".devcontainer/devcontainer.json with its image's and features' metadata: cove cannot run this dev container configuration:\n  - the image's metadata (label devcontainer.metadata): capAdd[0]: capability SYS_ADMIN is not granted by this runner's classes"},
		{"bad metadata label", plain, `42`, nil,
			"image example.com/img:1: devcontainer.metadata label: image label devcontainer.metadata must be an array or an object, not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := checkout(t, tt.files)
			cfg, warns := loadConfigIn(t, repo, false)
			img := testImage
			if tt.label != "" {
				img = withLabel(img, tt.label)
			}
			res, err := Resolve(Input{Identity: Identity{ID: "e1", RepoName: "repo"}, Class: tt.class, Allow: Allow(false, false),
				Config: cfg, Warnings: warns, RepoDir: repo, Image: img})
			msg, ok := usererr.Message(err)
			if !ok || res != nil || !strings.HasPrefix(strings.ReplaceAll(msg, repo, "REPO"), tt.want) {
				t.Errorf("Resolve = %+v, %v; want no result and the user error %q", res, err, tt.want)
			}
		})
	}
	// A class the runner does not know (nil) has no size to check.
	repo := checkout(t, big)
	cfg, warns := loadConfigIn(t, repo, false)
	if _, err := Resolve(Input{Identity: Identity{ID: "e1", RepoName: "repo"}, Allow: Allow(false, false), Config: cfg, Warnings: warns, RepoDir: repo, Image: testImage}); err != nil {
		t.Errorf("unknown class: %v", err)
	}
}
