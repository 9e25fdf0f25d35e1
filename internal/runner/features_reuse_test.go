package runner

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/features"
	"github.com/covedev/cove/internal/idmap"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// TestFeaturesReusedAndListed: the image step records the features with
// their key; the status lists them (id as written, version, digest,
// options given) once they are installed, not while pending; an
// environment whose features come from the cached layer says so in its
// log (`cove env logs` would otherwise say "no logs yet").
func TestFeaturesReusedAndListed(t *testing.T) {
	im := &imageStep{dataDir: t.TempDir()}
	r := &Runner{cfg: Config{DataDir: t.TempDir()}}
	fs := []features.Feature{
		{Ref: features.Ref{ID: "ghcr.io/acme/features/Chain-A:1", Options: map[string]any{"version": "1.22"}},
			Digest: "sha256:0123456789abcdef0123", Meta: features.Metadata{ID: "chain-a", Version: "1.2.3", Options: map[string]features.Option{"version": {Type: "string"}}}},
		{Ref: features.Ref{ID: "./local"}, Digest: "sha256:fedcba", Meta: features.Metadata{ID: "local"}},
	}
	for i := range fs {
		fs[i].Dir = t.TempDir()
		must(t, os.WriteFile(filepath.Join(fs[i].Dir, "install.sh"), []byte("true\n"), 0o755))
	}
	fi := &envconfig.FeatureInstall{Scope: "org:o|project:p", Inputs: []string{"image=sha256:i"}}
	me := idmap.Range{HostID: uint32(os.Getuid()), Size: 1} // Stage gives the copies to the environment's root
	status := func(e *stepEnv) []*covev1.InstalledFeature {
		return r.status(e.env, e.st, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, "").GetFeatures()
	}

	// First environment: nothing cached, the features are staged.
	e, _ := testStepEnv(t, &envState{Header: envdir.Header{IDMap: me}, Image: envconfig.Resolved{DC: &envconfig.DevcontainerState{}}})
	must(t, im.prepareFeatures(context.Background(), e.lay, e.st, fs, fi))
	if !e.st.Image.DC.FeaturesPending || status(e) != nil {
		t.Fatalf("pending features listed as installed: %v", status(e))
	}
	e.st.Features.Installed = true
	got := status(e)
	if len(got) != 2 || got[0].GetId() != "ghcr.io/acme/features/Chain-A:1" || got[0].GetVersion() != "1.2.3" || got[0].GetDigest() != "sha256:0123456789abcdef0123" ||
		got[0].GetOptions()["version"] != "1.22" || got[1].GetId() != "./local" {
		t.Fatalf("installed features: %v", got)
	}

	// Second environment, same key: the cached layer is reused and the log
	// says so, naming the features.
	must(t, os.MkdirAll(featuresLayer(im.dataDir, e.st.Image.DC.FeaturesKey), 0o700))
	e2, _ := testStepEnv(t, &envState{Header: envdir.Header{IDMap: me}, Image: envconfig.Resolved{DC: &envconfig.DevcontainerState{}}})
	must(t, im.prepareFeatures(context.Background(), e2.lay, e2.st, fs, fi))
	if e2.st.Image.DC.FeaturesPending || len(e2.st.Image.Layers) != 1 {
		t.Fatalf("cached layer not reused: %+v", e2.st.Image)
	}
	b, err := os.ReadFile(e2.lay.LogFile())
	if err != nil {
		t.Fatalf("no log for `cove env logs`: %v", err)
	}
	if log := string(b); !strings.Contains(log, "Features: reused the cached features layer "+shortDigest(e2.st.Image.DC.FeaturesKey)) ||
		!strings.Contains(log, "nothing was installed for: ghcr.io/acme/features/Chain-A:1 1.2.3, ./local\n") {
		t.Fatalf("log:\n%s", log)
	}
	if got := status(e2); len(got) != 2 {
		t.Errorf("reused features not listed: %v", got)
	}
}
