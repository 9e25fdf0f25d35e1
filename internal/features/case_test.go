package features

import (
	"context"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

// TestFeatureIDCase: registry feature ids are case-insensitive, as the
// reference CLI lower-cases them ("…/features/Chain-A:1" is chain-a:1): in
// devcontainer.json, in dependsOn, installsAfter and
// overrideFeatureInstallOrder; the id stays as written for messages and
// status. A local path is taken as written.
func TestFeatureIDCase(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry(t)
	src := t.TempDir()
	chainA := reg.publish(t, "features/chain-a:1", writeFeature(t, filepath.Join(src, "a"), optsMeta("chain-a", map[string]any{
		"options": map[string]any{"greeting": map[string]any{"type": "string", "default": "hello"}},
	}), "echo a\n"))
	mixedA := reg.host + "/Features/Chain-A:1"
	// chain-b depends on chain-a, spelled in upper case.
	chainB := reg.publish(t, "features/chain-b:1", writeFeature(t, filepath.Join(src, "b"), optsMeta("chain-b", map[string]any{
		"dependsOn": map[string]any{strings.ToUpper(reg.host + "/features/chain-a:1"): map[string]any{"greeting": "hi"}},
	}), "echo b\n"))
	// "aa-after" would install first (lexical order) but installsAfter
	// zz-last, named in mixed case.
	after := reg.publish(t, "features/aa-after:1", writeFeature(t, filepath.Join(src, "aa"), optsMeta("aa-after", map[string]any{
		"installsAfter": []string{reg.host + "/FEATURES/ZZ-Last"},
	}), "echo aa\n"))
	last := reg.publish(t, "features/zz-last:1", writeFeature(t, filepath.Join(src, "zz"), optsMeta("zz-last", nil), "echo zz\n"))

	r := newResolver(t)
	lower, err := r.Resolve(ctx, []Ref{{ID: chainA}}, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := r.Resolve(ctx, []Ref{{ID: mixedA, Options: map[string]any{"greeting": "yo"}}}, t.TempDir(), nil)
	if err != nil {
		t.Fatalf("mixed-case id: %v", err)
	}
	if len(fs) != 1 || fs[0].Digest != lower[0].Digest || fs[0].Ref.ID != mixedA {
		t.Fatalf("mixed-case id resolved to %+v, want chain-a (digest %s) with its id as written", fs, lower[0].Digest)
	}
	if got := fs[0].GivenOptions(); !maps.Equal(got, map[string]string{"greeting": "yo"}) {
		t.Errorf("given options = %v", got)
	}

	// The same feature in two spellings with the same options is one
	// installation, fetched once.
	blobs := reg.blobGets()
	fs, err = r.Resolve(ctx, []Ref{{ID: chainA, Options: map[string]any{"greeting": "hi"}}, {ID: mixedA, Options: map[string]any{"greeting": "hi"}}, {ID: chainB}}, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(fs); !slices.Equal(got, []string{"chain-a", "chain-b"}) {
		t.Fatalf("order = %v, want [chain-a chain-b] (the upper-case dependsOn is the user's chain-a)", got)
	}
	if reg.blobGets() != blobs+1 { // chain-b's layer; chain-a is cached
		t.Errorf("blob GETs: %d, want %d", reg.blobGets(), blobs+1)
	}

	fs, err = r.Resolve(ctx, []Ref{{ID: after}, {ID: last}}, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(fs); !slices.Equal(got, []string{"zz-last", "aa-after"}) {
		t.Errorf("installsAfter in mixed case: order = %v, want [zz-last aa-after]", got)
	}
	fs, err = r.Resolve(ctx, []Ref{{ID: chainA}, {ID: last}}, t.TempDir(), []string{reg.host + "/features/ZZ-LAST"})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(fs); !slices.Equal(got, []string{"zz-last", "chain-a"}) {
		t.Errorf("overrideFeatureInstallOrder in mixed case: order = %v, want [zz-last chain-a]", got)
	}

	// A local feature's path is a path: not lower-cased.
	cfg := t.TempDir()
	writeFeature(t, filepath.Join(cfg, "Local"), optsMeta("local", nil), "")
	lr := &Resolver{CacheDir: t.TempDir()}
	if _, err := lr.Resolve(ctx, []Ref{{ID: "./Local"}}, cfg, nil); err != nil {
		t.Errorf("./Local: %v", err)
	}
	_, err = lr.Resolve(ctx, []Ref{{ID: "./local"}}, cfg, nil)
	if msg, ok := usererr.Message(err); !ok || !strings.Contains(msg, `"./local"`) {
		t.Errorf("./local (the folder is ./Local): err = %v, want not found", err)
	}
}

// TestSoftMatchLegacyIDCase: an installsAfter entry names a feature by one
// of its legacyIds in any case.
func TestSoftMatchLegacyIDCase(t *testing.T) {
	g := &Feature{Ref: Ref{ID: "ghcr.io/x/node:1"}, Meta: Metadata{ID: "node", LegacyIDs: []string{"NodeJS"}}}
	for _, e := range []string{"ghcr.io/x/nodejs", "ghcr.io/X/NodeJS", "ghcr.io/x/NODE"} {
		if !softMatch(e, g) {
			t.Errorf("softMatch(%q) = false", e)
		}
	}
	if softMatch("ghcr.io/other/node", g) {
		t.Error("a feature of the same id from another namespace matched")
	}
}
