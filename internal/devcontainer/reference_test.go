package devcontainer

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/testutil"
)

// TestReferenceCLI runs the Dev Containers reference CLI
// (`devcontainer read-configuration`, installed by scripts/install-deps.sh
// test) and cove on every fixture in testdata/ref and compares the
// "configuration" and "workspace" objects, and "mergedConfiguration" for
// fixtures with an image-metadata.json (the image's devcontainer.metadata
// label, answered by a stand-in docker script).
//
// Intentional differences, normalised here:
//   - none so far in these objects: cove prints configFilePath the way the
//     reference CLI serialises its URI. The reference CLI looks for an
//     enclosing git repository to mount; the fixtures are copied to a
//     temporary directory outside any repository, where both agree.
//   - The reference CLI's extra top-level objects (featuresConfiguration,
//     ociAuthDiagnostics) are not compared.
func TestReferenceCLI(t *testing.T) {
	testutil.RequireTool(t, "devcontainer")
	ref, err := exec.LookPath("devcontainer")
	if err != nil {
		t.Fatal(err)
	}
	fixtures, err := filepath.Glob("testdata/ref/*")
	if err != nil || len(fixtures) < 10 {
		t.Fatalf("fixtures: %v, %v", fixtures, err)
	}
	env := map[string]string{"HOME": "/home/tester", "COVE_TEST_VAR": "hello", "PATH": os.Getenv("PATH")}
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	for _, fx := range fixtures {
		name := filepath.Base(fx)
		t.Run(name, func(t *testing.T) {
			tmp := t.TempDir()
			ws := filepath.Join(tmp, name)
			if err := os.CopyFS(ws, os.DirFS(fx)); err != nil {
				t.Fatal(err)
			}
			docker := filepath.Join(tmp, "docker")
			script := "#!/bin/sh\n[ \"$1\" = inspect ] && cat " + filepath.Join(tmp, "image.json") + "\nexit 0\n"
			if err := os.WriteFile(docker, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			label, _ := os.ReadFile(filepath.Join(fx, "image-metadata.json"))
			inspect, _ := json.Marshal([]any{map[string]any{"Id": "sha256:0", "Architecture": "amd64", "Os": "linux",
				"Config": map[string]any{"User": "", "Env": []string{"PATH=/usr/bin"}, "Labels": map[string]string{MetadataLabel: string(label)}}}})
			if err := os.WriteFile(filepath.Join(tmp, "image.json"), inspect, 0o644); err != nil {
				t.Fatal(err)
			}
			explicit := ""
			if name == "subfolder" {
				explicit = ".devcontainer/python/devcontainer.json"
			}
			args := []string{"read-configuration", "--workspace-folder", ws, "--docker-path", docker}
			if explicit != "" {
				args = append(args, "--config", filepath.Join(ws, explicit))
			}
			merged := len(label) > 0
			if merged {
				args = append(args, "--include-merged-configuration")
			}
			cmd := exec.Command(ref, args...)
			cmd.Env = envList
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("reference CLI: %v\n%s", err, stderr.String())
			}
			var want map[string]any
			if err := json.Unmarshal(out, &want); err != nil {
				t.Fatalf("reference output: %v\n%s", err, out)
			}

			c, _, err := Read(ws, explicit, LoadOptions{LocalEnv: env})
			if err != nil {
				t.Fatal(err)
			}
			var m *Merged
			if merged {
				if m, err = MergeImageMetadata(c, string(label)); err != nil {
					t.Fatal(err)
				}
			}
			b, err := json.Marshal(ReadConfigurationOutput(c, m))
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			keys := []string{"configuration", "workspace"}
			if merged {
				keys = append(keys, "mergedConfiguration")
			}
			for _, k := range keys {
				if !reflect.DeepEqual(got[k], want[k]) {
					g, _ := json.MarshalIndent(got[k], "", " ")
					w, _ := json.MarshalIndent(want[k], "", " ")
					t.Errorf("%s differs:\ncove:\n%s\nreference:\n%s", k, g, w)
				}
			}
			if strings.Contains(stderr.String(), "rror") {
				t.Logf("reference stderr: %s", stderr.String())
			}
		})
	}
}
