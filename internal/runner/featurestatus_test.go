package runner

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/features"
)

// TestFeatureHelpers: what the runner records of resolved features (id as
// written, version, digest, the options given), what resolution reads
// (who depends on whom, every class), and the line an environment that
// reuses the cached layer gets in its log.
func TestFeatureHelpers(t *testing.T) {
	dep := &features.Feature{Ref: features.Ref{ID: "ghcr.io/acme/features/base:1"}, Digest: "sha256:b", Meta: features.Metadata{ID: "base", Version: "0.1.0"}}
	fs := []features.Feature{
		*dep,
		{Ref: features.Ref{ID: "ghcr.io/acme/features/Chain-A:1", Options: map[string]any{"version": "1.22", "pip": true}},
			Digest: "sha256:0123456789abcdef0123", Meta: features.Metadata{ID: "chain-a", Version: "1.2.3",
				Options: map[string]features.Option{"version": {Type: "string"}, "pip": {Type: "boolean"}}}},
	}
	got := installedFeatures(fs)
	want := []envconfig.InstalledFeature{{ID: "ghcr.io/acme/features/base:1", Version: "0.1.0", Digest: "sha256:b"},
		{ID: "ghcr.io/acme/features/Chain-A:1", Version: "1.2.3", Digest: "sha256:0123456789abcdef0123", Options: map[string]string{"version": "1.22", "pip": "true"}}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("installedFeatures = %+v, want %+v", got, want)
	}

	ef, err := envconfigFeatures(fs)
	if err != nil || len(ef) != 2 || ef[1].ID != "ghcr.io/acme/features/Chain-A:1" || !strings.Contains(string(ef[1].Metadata), `"chain-a"`) {
		t.Fatalf("envconfigFeatures = %+v, %v", ef, err)
	}

	cs := classes{{Id: "small"}, {Id: "big"}}
	rs := cs.resolutions(devcontainer.Allow{Privileged: true})
	if len(rs) != 2 || rs[0].ID != "small" || rs[1].ID != "big" || !rs[1].Allow.Privileged {
		t.Errorf("resolutions = %+v", rs)
	}

	lay := envdir.New(t.TempDir(), "e1")
	must(t, logFeaturesReused(lay, "sha256:00112233445566778899aabb", got))
	b, err := os.ReadFile(lay.LogFile())
	if err != nil {
		t.Fatalf("no log for `cove env logs`: %v", err)
	}
	if want := "Features: reused the cached features layer sha256:001122334455, installed before for an environment of this project with the same image and settings; " +
		"nothing was installed for: ghcr.io/acme/features/base:1 0.1.0, ghcr.io/acme/features/Chain-A:1 1.2.3\n"; string(b) != want {
		t.Errorf("log = %q, want %q", b, want)
	}

	st := featuresStatus(got)
	if len(st) != 2 || st[1].GetId() != "ghcr.io/acme/features/Chain-A:1" || st[1].GetOptions()["pip"] != "true" || len(st[0].GetOptions()) != 0 {
		t.Errorf("featuresStatus = %v", st)
	}
}

// TestFeaturesStatusBounded: the repository (and a feature's author, who
// declares the options) choose how many features and options there are
// and how long their values are; the status carries a bounded list.
func TestFeaturesStatusBounded(t *testing.T) {
	opts := map[string]string{}
	for i := range 2 * maxStatusFeatureOptions {
		opts[fmt.Sprintf("o%03d", i)] = strings.Repeat("x", 10*maxStatusOptionValue)
	}
	var fs []envconfig.InstalledFeature
	for i := range 2 * maxStatusFeatures {
		fs = append(fs, envconfig.InstalledFeature{ID: fmt.Sprintf("ghcr.io/x/f%d:1", i), Options: opts})
	}
	got := featuresStatus(fs)
	if len(got) != maxStatusFeatures {
		t.Fatalf("%d features reported, want at most %d", len(got), maxStatusFeatures)
	}
	for _, f := range got {
		if len(f.GetOptions()) != maxStatusFeatureOptions {
			t.Fatalf("%d options reported, want %d", len(f.GetOptions()), maxStatusFeatureOptions)
		}
		for _, v := range f.GetOptions() {
			if len(v) > maxStatusOptionValue+len("…") {
				t.Fatalf("option value of %d bytes reported", len(v))
			}
		}
	}
	// The options kept are the first by name, the same every time.
	if keys := slices.Sorted(maps.Keys(got[0].GetOptions())); keys[0] != "o000" || keys[len(keys)-1] != fmt.Sprintf("o%03d", maxStatusFeatureOptions-1) {
		t.Errorf("options kept: %v", keys)
	}
}
