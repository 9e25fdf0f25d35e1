package runner

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/features"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// installedFeatures is fs as the environment's state and status list them.
func installedFeatures(fs []features.Feature) []envconfig.InstalledFeature {
	out := make([]envconfig.InstalledFeature, 0, len(fs))
	for _, f := range fs {
		out = append(out, envconfig.InstalledFeature{ID: f.Ref.ID, Version: f.Meta.Version, Digest: f.Digest, Options: f.GivenOptions()})
	}
	return out
}

// logFeaturesReused says in the environment's log (`cove env logs`) that
// its features fs come from the cached layer of key, installed
// before for an environment of the same scope with the same image,
// configuration and features: nothing is installed, so nothing else
// would appear there about them.
func logFeaturesReused(lay envdir.Layout, key string, fs []envconfig.InstalledFeature) error {
	if err := os.MkdirAll(lay.LogDir(), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(lay.LogFile(), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	_, err = fmt.Fprintf(logf, "Features: reused the cached features layer %s, installed before for an environment of this project with the same image and settings; nothing was installed for: %s\n",
		shortDigest(key), featureList(fs))
	return err
}

// featureList is "id version, id version" (the version left out when the
// feature has none).
func featureList(fs []envconfig.InstalledFeature) string {
	var b strings.Builder
	for i, f := range fs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(f.ID)
		if f.Version != "" {
			b.WriteString(" " + f.Version)
		}
	}
	return b.String()
}

// shortDigest is "sha256:" and the first 12 hex digits of d.
func shortDigest(d string) string {
	algo, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) <= 12 {
		return d
	}
	return algo + ":" + hex[:12]
}

// featuresStatus is an environment's features (DevcontainerState.Features)
// as its status reports them, bounded; the caller reports them once they
// are installed (or came from a cached layer), not while pending.
func featuresStatus(fs []envconfig.InstalledFeature) []*covev1.InstalledFeature {
	var out []*covev1.InstalledFeature
	for _, f := range fs {
		if len(out) == maxStatusFeatures {
			break
		}
		opts := map[string]string{}
		for _, k := range slices.Sorted(maps.Keys(f.Options)) {
			if len(opts) == maxStatusFeatureOptions {
				break
			}
			v := f.Options[k]
			if len(v) > maxStatusOptionValue {
				cut := maxStatusOptionValue
				for cut > 0 && !utf8.RuneStart(v[cut]) {
					cut--
				}
				v = v[:cut] + "…"
			}
			opts[k] = v
		}
		out = append(out, &covev1.InstalledFeature{Id: f.ID, Version: f.Version, Digest: f.Digest, Options: opts})
	}
	return out
}

// Bounds of the features an environment's status lists: a repository's
// configuration (and a feature's author, who declares the options) choose
// how many there are and how long their values are.
const (
	maxStatusFeatures       = 100
	maxStatusFeatureOptions = 32
	maxStatusOptionValue    = 256
)

// envconfigFeatures is fs as resolution reads them: each with its
// metadata and the features that depend on it.
func envconfigFeatures(fs []features.Feature) ([]envconfig.Feature, error) {
	requiredBy := map[string][]string{}
	for _, f := range fs {
		for _, d := range f.Dependencies() {
			if !slices.Contains(requiredBy[d], f.Ref.ID) {
				requiredBy[d] = append(requiredBy[d], f.Ref.ID)
			}
		}
	}
	out := make([]envconfig.Feature, 0, len(fs))
	for _, f := range fs {
		meta, err := json.Marshal(f.Meta)
		if err != nil {
			return nil, err
		}
		out = append(out, envconfig.Feature{ID: f.Ref.ID, Metadata: meta, RequiredBy: requiredBy[f.Ref.ID]})
	}
	return out, nil
}

// resolutions are every class as envconfig reads it, for messages naming
// the classes that would allow what a configuration asks for.
func (cs classes) resolutions(allow devcontainer.Allow) []*envconfig.Class {
	out := make([]*envconfig.Class, 0, len(cs))
	for _, c := range cs {
		out = append(out, cs.resolution(c.GetId(), allow))
	}
	return out
}
