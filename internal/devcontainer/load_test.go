package devcontainer

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

func load(t *testing.T, doc string, opts LoadOptions) (*Config, []Warning, error, string) {
	t.Helper()
	dir := writeFiles(t, map[string]string{"repo/.devcontainer/devcontainer.json": doc})
	repo := filepath.Join(dir, "repo")
	c, w, err := Load(repo, "", opts)
	return c, w, err, ".devcontainer/devcontainer.json" // messages name it relative to the repository
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // substrings of the one user message; FILE is the path
		not  []string
	}{
		{name: "syntax", doc: "{\n  \"image\": \"a\"\n  \"x\": 1}", want: []string{"FILE:3:3: "}},
		{name: "type with position", doc: "{\n  \"image\": \"a\",\n  \"capAdd\": \"SYS_PTRACE\"\n}", want: []string{`FILE:3:3: "capAdd" must be an array of strings, not a string`}},
		{name: "nested type", doc: "{\"image\": \"a\",\n \"mounts\": [\"type=volume,target=/a\",\n 3]}", want: []string{`FILE:2:2: "mounts" must be a string or an object with "type", "source" and "target", not a number`}},
		{name: "bad command", doc: "{\"image\": \"a\", \"postCreateCommand\": 3}", want: []string{`"postCreateCommand" must be a string, an array of strings or an object, not a number`}},
		{name: "missing image", doc: `{"name": "x"}`, want: []string{`Dev container config (FILE) is missing one of "image", "dockerFile" or "dockerComposeFile" properties.`}},
		{name: "dockerfile", doc: `{"build": {"dockerfile": "Dockerfile"}}`, want: []string{"FILE:1:2: build: this runner cannot build images from Dockerfiles"}},
		{name: "legacy dockerFile", doc: `{"dockerFile": "Dockerfile", "context": ".."}`, want: []string{"FILE:1:2: dockerFile: this runner cannot build images from Dockerfiles"}},
		{name: "compose", doc: `{"dockerComposeFile": "c.yml", "service": "app"}`, want: []string{"FILE:1:2: dockerComposeFile: this runner cannot run Docker Compose configurations"}},
		{name: "every offending property", doc: `{
  "image": "a",
  "privileged": true,
  "capAdd": ["SYS_PTRACE", "SYS_ADMIN", "NET_ADMIN"],
  "runArgs": ["--network=host", "--pid", "host", "--privileged", "-v", "/var/run/docker.sock:/var/run/docker.sock", "--cap-add=SYS_MODULE", "-e", "A=b"],
  "mounts": ["source=/var/run/docker.sock,target=/var/run/docker.sock,type=bind", {"type": "bind", "source": "/home", "target": "/h"}, "type=volume,source=ok,target=/ok"],
  "securityOpt": ["seccomp=unconfined"]
}`, want: []string{
			"FILE: cove cannot run this dev container configuration (10 problems):",
			`FILE:5:15: runArgs[0]: "--network=host" asks for the runner host's network`,
			`FILE:5:33: runArgs[1]: "--pid host" shares the runner host's namespace`,
			`FILE:5:50: runArgs[3]: "--privileged" is refused: privileged mode`,
			"FILE:5:66: runArgs[4] (also mounts[0] at FILE:6:14): mounting the Docker socket /var/run/docker.sock would give the environment root on the runner host",
			"no class offers Docker today",
			"FILE:3:3: privileged: privileged mode gives the environment every capability",
			"FILE:4:28: capAdd[1]: capability SYS_ADMIN is not granted by this runner's classes (they grant: SYS_PTRACE)",
			"FILE:4:41: capAdd[2]: capability NET_ADMIN",
			"FILE:5:117: runArgs[6]: capability SYS_MODULE",
			`FILE:6:83: mounts[1]: bind mount of host path "/home"`,
			`FILE:7:19: securityOpt[0]: "seccomp=unconfined" turns off the system-call filter`,
		}, not: []string{"mounts[2]", "-e", "not an option"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err, path := load(t, tt.doc, LoadOptions{Allow: Allow{Capabilities: []string{"SYS_PTRACE"}}})
			msg, ok := usererr.Message(err)
			if !ok {
				t.Fatalf("Load error = %v, want a user error", err)
			}
			for _, w := range tt.want {
				if w = strings.ReplaceAll(w, "FILE", path); !strings.Contains(msg, w) {
					t.Errorf("message lacks %q:\n%s", w, msg)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(msg, n) {
					t.Errorf("message names %q, which is fine:\n%s", n, msg)
				}
			}
		})
	}
}

func TestLoadCompose(t *testing.T) {
	allow := LoadOptions{Allow: Allow{Compose: true}}
	tests := []struct {
		name, doc string
		want      *ComposeConfig
		err       string
	}{
		{name: "one file", doc: `{"dockerComposeFile": "c.yml", "service": "app"}`, want: &ComposeConfig{Files: []string{"c.yml"}, Service: "app"}},
		{name: "files and runServices", doc: `{"dockerComposeFile": ["a.yml", "../b.yml"], "service": "app", "runServices": ["db"], "shutdownAction": "stopCompose"}`,
			want: &ComposeConfig{Files: []string{"a.yml", "../b.yml"}, Service: "app", RunServices: []string{"db"}}},
		{name: "no service", doc: `{"dockerComposeFile": "c.yml"}`, err: `FILE:1:2: "service" is required with "dockerComposeFile"`},
		{name: "empty list", doc: `{"dockerComposeFile": [], "service": "app"}`, err: "FILE:1:2: dockerComposeFile names no file"},
		{name: "not a name", doc: `{"dockerComposeFile": [3], "service": "app"}`, err: "FILE:1:2: dockerComposeFile must be a file name or a list of file names"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err, path := load(t, tt.doc, allow)
			if tt.err != "" {
				msg, ok := usererr.Message(err)
				if want := strings.ReplaceAll(tt.err, "FILE", path); !ok || !strings.Contains(msg, want) {
					t.Fatalf("Load error = %v, want a user error containing %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Compose()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Compose() = %+v, want %+v", got, tt.want)
			}
			if c.Workspace.WorkspaceFolder != "" {
				t.Errorf("compose default workspaceFolder = %q, want empty (the runner decides)", c.Workspace.WorkspaceFolder)
			}
		})
	}
	c, _, err, _ := load(t, `{"image": "a"}`, allow)
	if err != nil {
		t.Fatal(err)
	}
	if cc, err := c.Compose(); cc != nil || err != nil {
		t.Errorf("Compose() of an image config = %v, %v; want nil, nil", cc, err)
	}
}

func TestLoadAllowed(t *testing.T) {
	doc := `{"image": "a", "privileged": true, "capAdd": ["cap_sys_admin"], "securityOpt": ["seccomp=unconfined", "no-new-privileges"],
	  "runArgs": ["--cap-add", "NET_ADMIN", "--env=A=1", "-l", "x=y", "--init", "--name", "n"],
	  "mounts": ["type=volume,source=v,target=/v", "type=tmpfs,target=/t"]}`
	c, warns, err, _ := load(t, doc, LoadOptions{Allow: Allow{Privileged: true, Capabilities: []string{"ALL"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := RunArgs{CapAdd: []string{"NET_ADMIN"}, Env: map[string]string{"A": "1"}, Labels: map[string]string{"x": "y"}, Init: true, Ignored: []string{"--name n"}}
	if !reflect.DeepEqual(c.Run, want) {
		t.Fatalf("Run = %+v, want %+v", c.Run, want)
	}
	if len(warns) != 1 || !strings.Contains(warns[0].Message, "--name n is ignored") {
		t.Fatalf("warnings = %v", warns)
	}
}

func TestWarningsAndLegacy(t *testing.T) {
	doc := `{
  "image": "a",
  "shutdownAction": "none",
  "appPort": 3000,
  "initializeCommand": "echo hi",
  "extensions": ["x.y"],
  "settings": {"a": 1, "b": 1},
  "customizations": {"vscode": {"extensions": ["z"], "settings": {"b": 2}}},
  "frobnicate": true
}`
	c, warns, err, path := load(t, doc, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range warns {
		got = append(got, w.String())
	}
	for _, w := range []string{path + ":3:3: shutdownAction is ignored", path + ":4:3: appPort is deprecated",
		path + ":5:3: initializeCommand is ignored", path + ":9:3: unknown property \"frobnicate\"", path + ":6:3: legacy top-level extensions"} {
		if !strings.Contains(strings.Join(got, "\n"), w) {
			t.Errorf("warnings lack %q: %q", w, got)
		}
	}
	vs := c.Customizations["vscode"].(map[string]any)
	if !reflect.DeepEqual(vs["extensions"], []any{"z", "x.y"}) || !reflect.DeepEqual(vs["settings"], map[string]any{"a": 1.0, "b": 2.0}) {
		t.Fatalf("vscode customizations = %v", vs)
	}
	if _, ok := c.Raw["extensions"]; ok {
		t.Fatal("extensions not removed")
	}
	if !reflect.DeepEqual(c.AppPort, []Port{{Port: 3000}}) {
		t.Fatalf("AppPort = %v", c.AppPort)
	}
}

func TestVariables(t *testing.T) {
	doc := `{"image": "a", "containerEnv": {
	  "A": "${localEnv:V}", "B": "${localEnv:NOPE:def:more}", "C": "${localEnv:NOPE}", "D": "${env:V}",
	  "E": "${localWorkspaceFolder}|${localWorkspaceFolderBasename}", "F": "${containerWorkspaceFolder}|${containerWorkspaceFolderBasename}",
	  "G": "${containerEnv:PATH}", "H": "${devcontainerId}", "I": "${what}", "J": "${localEnv}"},
	  "remoteEnv": {"P": "${containerEnv:PATH}:/x", "Q": "${containerEnv:NONE:dflt}"}}`
	c, _, err, _ := load(t, doc, LoadOptions{LocalWorkspaceFolder: "/srv/cove/envs/e1/myrepo", LocalEnv: map[string]string{"V": "v"}, DevcontainerID: "env-123"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "v", "B": "def", "C": "", "D": "v", "E": "/srv/cove/envs/e1/myrepo|myrepo",
		"F": "/workspaces/myrepo|myrepo", "G": "${containerEnv:PATH}", "H": "env-123", "I": "${what}", "J": "${localEnv}"}
	if !reflect.DeepEqual(c.ContainerEnv, want) {
		t.Fatalf("containerEnv = %v\nwant %v", c.ContainerEnv, want)
	}
	m, err := MergeImageMetadata(c, `{"containerEnv": {"W": "${localWorkspaceFolderBasename}"}}`)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.ResolveContainerEnv(map[string]string{"PATH": "/bin"}); err != nil {
		t.Fatal(err)
	}
	// ${containerEnv:...} is not defined inside containerEnv: it stays.
	if got := m.ContainerEnv(); got["G"] != "${containerEnv:PATH}" || got["W"] != "myrepo" {
		t.Fatalf("merged containerEnv = %v", got)
	}
	if re := m.RemoteEnv(); *re["P"] != "/bin:/x" || *re["Q"] != "dflt" {
		t.Fatalf("remoteEnv = %v", re)
	}
	if c.Workspace.WorkspaceFolder != "/workspaces/myrepo" || c.Workspace.MountTarget != "/workspaces/myrepo" {
		t.Fatalf("workspace = %+v", c.Workspace)
	}
}
