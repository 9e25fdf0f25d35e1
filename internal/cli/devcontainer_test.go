package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDevcontainerReadConfiguration(t *testing.T) {
	ws := filepath.Join(t.TempDir(), "repo")
	if err := os.MkdirAll(filepath.Join(ws, ".devcontainer"), 0o755); err != nil {
		t.Fatal(err)
	}
	doc := "// c\n{\"image\": \"debian:12\", \"extensions\": [\"a\"], \"containerEnv\": {\"B\": \"${localWorkspaceFolderBasename}\"},}"
	if err := os.WriteFile(filepath.Join(ws, ".devcontainer", "devcontainer.json"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	meta := filepath.Join(t.TempDir(), "label.json")
	if err := os.WriteFile(meta, []byte(`[{"remoteUser":"vscode"}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := DevcontainerCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{"read-configuration", "--workspace-folder", ws, "--include-merged-configuration", "--image-metadata", meta})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Configuration map[string]any `json:"configuration"`
		Workspace     map[string]any `json:"workspace"`
		Merged        map[string]any `json:"mergedConfiguration"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if got.Configuration["containerEnv"].(map[string]any)["B"] != "repo" || got.Configuration["customizations"] == nil ||
		got.Workspace["workspaceFolder"] != "/workspaces/repo" || got.Merged["remoteUser"] != "vscode" {
		t.Fatalf("unexpected output: %s", out.String())
	}
}

// TestReadConfigurationSaysWhatARunnerRefuses: read-configuration prints
// the configuration as the reference CLI does (exit 0) and says on standard
// error, one line per problem with its position and remedy, what a runner
// with the default policy would refuse; nothing when it would run.
func TestReadConfigurationSaysWhatARunnerRefuses(t *testing.T) {
	for _, tt := range []struct {
		name, doc string
		want      []string
	}{
		{"refused", "{\"image\": \"debian:12\",\n \"runArgs\": [\"--network=host\"],\n \"features\": {\"homebrew\": \"latest\"}}", []string{
			"warning: a cove runner with the default policy",
			"\n  .devcontainer/devcontainer.json: cove cannot run this dev container configuration (2 problems):\n",
			`    - .devcontainer/devcontainer.json:2:14: runArgs[0]: "--network=host" asks for the runner host's network`,
			`    - .devcontainer/devcontainer.json:3:15: features["homebrew"]: "homebrew" is a retired short feature id`,
		}},
		{"fine", "{\"image\": \"debian:12\", \"capAdd\": [\"NET_RAW\"]}", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ws := filepath.Join(t.TempDir(), "repo")
			if err := os.MkdirAll(filepath.Join(ws, ".devcontainer"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(ws, ".devcontainer", "devcontainer.json"), []byte(tt.doc), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := DevcontainerCommand()
			var out, errOut bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			cmd.SetArgs([]string{"read-configuration", "--workspace-folder", ws})
			if err := cmd.Execute(); err != nil {
				t.Fatalf("read-configuration failed: %v", err)
			}
			var got map[string]any
			if err := json.Unmarshal(out.Bytes(), &got); err != nil || got["configuration"] == nil {
				t.Fatalf("stdout is not the configuration: %v %s", err, out.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut.String())
				}
			}
			if tt.want == nil && strings.Contains(errOut.String(), "would refuse") {
				t.Errorf("stderr refuses a configuration a runner runs:\n%s", errOut.String())
			}
		})
	}
}
