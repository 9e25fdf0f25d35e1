package envdir

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/covedev/cove/internal/idmap"
)

// testState is a state value with sections, as the runner's is.
type testState struct {
	Header
	Content struct {
		RepoName string `json:"repoName,omitempty"`
		Ready    bool   `json:"ready,omitempty"`
	} `json:"content"`
	Mount struct {
		WorkspaceOwner string `json:"workspaceOwner,omitempty"`
	} `json:"mount"`
	Network struct {
		IP string `json:"ip,omitempty"`
	} `json:"network"`
	Image struct {
		Ref     string          `json:"ref,omitempty"`
		Digest  string          `json:"digest,omitempty"`
		Layers  []string        `json:"layers,omitempty"`
		User    string          `json:"user,omitempty"`
		Env     []string        `json:"env,omitempty"`
		DC      map[string]any  `json:"devcontainer,omitempty"`
		Compose json.RawMessage `json:"compose,omitempty"`
	} `json:"image"`
	Lifecycle struct {
		CreatedDone bool `json:"createdDone,omitempty"`
		Pid         int  `json:"pid,omitempty"`
	} `json:"lifecycle"`
	Start struct {
		StartedOnce bool `json:"startedOnce,omitempty"`
	} `json:"start"`
	Rebuild struct {
		Generation int64 `json:"generation,omitempty"`
	} `json:"rebuild"`
	Failure struct {
		SpecVersion int64  `json:"specVersion,omitempty"`
		Message     string `json:"message,omitempty"`
	} `json:"failure"`
}

// TestMigrateFromMain reads a state file as runners up to f9135bc wrote
// it (unversioned, flat) and finds every value in its step's section.
func TestMigrateFromMain(t *testing.T) {
	var st testState
	if err := Load(filepath.Join("testdata", "state-v0-f9135bc.json"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Version != StateVersion || st.ID != "env-7f3a" || st.IDMap != (idmap.Range{HostID: 1<<24 + 65536, Size: 65536}) {
		t.Errorf("header %+v", st.Header)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"content.repoName", st.Content.RepoName, "app"},
		{"content.ready", st.Content.Ready, true},
		{"mount.workspaceOwner", st.Mount.WorkspaceOwner, "1000:1000"},
		{"network.ip", st.Network.IP, "10.88.0.5"},
		{"image.ref", st.Image.Ref, "127.0.0.1:5000/dev:latest"},
		{"image.digest", st.Image.Digest, "sha256:1111111111111111111111111111111111111111111111111111111111111111"},
		{"image.layers", len(st.Image.Layers), 2},
		{"image.user", st.Image.User, "dev"},
		{"image.env", st.Image.Env, []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}},
		{"image.devcontainer.workspaceFolder", st.Image.DC["workspaceFolder"], "/workspaces/app"},
		{"image.devcontainer.featuresPending", st.Image.DC["featuresPending"], true},
		{"lifecycle.createdDone", st.Lifecycle.CreatedDone, true},
		{"lifecycle.pid", st.Lifecycle.Pid, 4242},
		{"start.startedOnce", st.Start.StartedOnce, true},
		{"rebuild.generation", st.Rebuild.Generation, int64(3)},
		{"failure.specVersion", st.Failure.SpecVersion, int64(9)},
		{"failure.message", st.Failure.Message, "postCreateCommand failed"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	// The lifecycle's progress left the resolved configuration.
	for _, k := range []string{"createdDone", "lifecyclePid"} {
		if _, ok := st.Image.DC[k]; ok {
			t.Errorf("devcontainer section still has %q", k)
		}
	}
	if len(st.Image.Compose) == 0 {
		t.Error("compose section lost")
	}

	// Saved again, it reads back the same, now as the current version.
	path := filepath.Join(t.TempDir(), "state.json")
	if err := Save(path, &st); err != nil {
		t.Fatal(err)
	}
	var again testState
	if err := Load(path, &again); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st, again) {
		t.Errorf("round trip changed the state:\n%+v\n%+v", st, again)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var st testState
	if err := Load(filepath.Join(dir, "missing.json"), &st); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	if err := Load(write("newer.json", `{"version": 99, "id": "x"}`), &st); !errors.Is(err, ErrNewerState) {
		t.Errorf("newer version: %v, want ErrNewerState", err)
	}
	for name, content := range map[string]string{
		"truncated": `{"id": "x", "conte`, "array": `[]`, "null": `null`, "negative": `{"version": -1}`,
		"bad version": `{"version": "one"}`, "bad section": `{"version": 1, "content": 7}`,
	} {
		if err := Load(write(name+".json", content), &st); err == nil {
			t.Errorf("%s: loaded %q without an error", name, content)
		}
	}
}
