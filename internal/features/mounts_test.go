package features

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/usererr"
)

// A feature's mounts go through the devcontainer's one --mount parser:
// "readonly" survives the trip to the merged configuration (the runner
// turns a feature's metadata into an image-metadata entry by JSON), and a
// mount the feature got wrong is reported by the merged check with the
// other problems instead of being applied half-read.
func TestFeatureMountsKeepReadonly(t *testing.T) {
	dir := writeFeature(t, filepath.Join(t.TempDir(), "f"), map[string]any{
		"id": "f", "version": "1.0.0",
		"mounts": []any{
			"type=volume,source=cache,target=/cache,readonly",
			map[string]any{"type": "volume", "source": "obj", "target": "/obj", "readonly": true},
			"type=volume,source=rw,target=/rw,readonly=false",
		},
	}, "")
	meta, err := readMetadata(dir, "./f")
	if err != nil {
		t.Fatal(err)
	}
	merged := mergeFeature(t, meta)
	got := map[string]bool{}
	for _, m := range merged.Mounts() {
		got[m.Target] = m.ReadOnly
	}
	if want := map[string]bool{"/cache": true, "/obj": true, "/rw": false}; len(got) != len(want) || !got["/cache"] || !got["/obj"] || got["/rw"] {
		t.Errorf("merged mounts' readonly = %v, want %v", got, want)
	}
	if err := merged.Check(devcontainer.Allow{}); err != nil {
		t.Errorf("Check = %v", err)
	}
}

func TestFeatureMountProblemsAreReported(t *testing.T) {
	dir := writeFeature(t, filepath.Join(t.TempDir(), "f"), map[string]any{
		"id": "f", "version": "1.0.0",
		"mounts": []any{"type=volume,source=x,target=/x,readonly=sometimes"},
	}, "")
	meta, err := readMetadata(dir, "./f")
	if err != nil {
		t.Fatal(err)
	}
	err = mergeFeature(t, meta).Check(devcontainer.Allow{})
	msg, ok := usererr.Message(err)
	if !ok || !strings.Contains(msg, `readonly="sometimes" is not true or false`) {
		t.Errorf("Check = %v, want the feature's bad mount reported", err)
	}
}

// mergeFeature merges meta as the runner does: the feature's metadata as an
// image-metadata entry between the image's and the configuration's.
func mergeFeature(t *testing.T, meta Metadata) *devcontainer.Merged {
	t.Helper()
	repo := t.TempDir()
	if err := os.MkdirAll(filepath.Join(repo, ".devcontainer"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, ".devcontainer", "devcontainer.json"), []byte(`{"image": "img"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := devcontainer.Load(repo, "", devcontainer.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	var e devcontainer.MetadataEntry
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	merged, err := devcontainer.Merge(cfg, []devcontainer.MetadataEntry{e})
	if err != nil {
		t.Fatal(err)
	}
	return merged
}
