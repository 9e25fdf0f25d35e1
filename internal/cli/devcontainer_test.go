package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
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
