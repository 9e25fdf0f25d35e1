package features

import (
	"slices"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

// spec describes a feature for the ordering tests: "id" is its OCI
// reference under ghcr.io/x/, after its installsAfter, deps its dependsOn.
type spec struct {
	id    string
	after []string
	deps  []string
}

func buildGraph(specs []spec) []*Feature {
	byID := map[string]*Feature{}
	var all []*Feature
	for _, s := range specs {
		f := &Feature{Ref: Ref{ID: "ghcr.io/x/" + s.id + ":1"}, Digest: "sha256:" + s.id, Meta: Metadata{ID: s.id}}
		for _, a := range s.after {
			f.Meta.InstallsAfter = append(f.Meta.InstallsAfter, "ghcr.io/x/"+a)
		}
		byID[s.id] = f
		all = append(all, f)
	}
	for _, s := range specs {
		for _, d := range s.deps {
			byID[s.id].deps = append(byID[s.id].deps, byID[d])
		}
	}
	return all
}

func TestOrder(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features []spec
		override []string
		want     []string
		err      string
	}{
		{name: "no constraints: lexical", features: []spec{{id: "c"}, {id: "a"}, {id: "b"}}, want: []string{"a", "b", "c"}},
		{name: "installsAfter", features: []spec{{id: "a", after: []string{"c"}}, {id: "b"}, {id: "c"}}, want: []string{"b", "c", "a"}},
		{name: "installsAfter absent feature ignored", features: []spec{{id: "a", after: []string{"zzz"}}, {id: "b"}}, want: []string{"a", "b"}},
		{name: "dependsOn", features: []spec{{id: "a", deps: []string{"b"}}, {id: "b", deps: []string{"c"}}, {id: "c"}}, want: []string{"c", "b", "a"}},
		{name: "dependsOn and installsAfter", features: []spec{{id: "a", deps: []string{"d"}}, {id: "b", after: []string{"a"}}, {id: "c"}, {id: "d"}}, want: []string{"c", "d", "a", "b"}},
		// Spec: features in overrideFeatureInstallOrder go first, in that order.
		{name: "override", features: []spec{{id: "java"}, {id: "node"}, {id: "go"}}, override: []string{"ghcr.io/x/node"}, want: []string{"node", "go", "java"}},
		{name: "override several, versioned", features: []spec{{id: "a"}, {id: "b"}, {id: "c"}}, override: []string{"ghcr.io/x/c:1", "ghcr.io/x/b"}, want: []string{"c", "b", "a"}},
		{name: "override beats installsAfter", features: []spec{{id: "a"}, {id: "b", after: []string{"a"}}, {id: "c"}}, override: []string{"ghcr.io/x/c"}, want: []string{"c", "a", "b"}},
		{name: "override cannot break dependsOn", features: []spec{{id: "a", deps: []string{"b"}}, {id: "b"}, {id: "c"}}, override: []string{"ghcr.io/x/a"}, want: []string{"b", "c", "a"}},
		{name: "override unknown", features: []spec{{id: "a"}}, override: []string{"ghcr.io/x/zzz"}, err: "zzz"},
		{name: "dependsOn cycle", features: []spec{{id: "a", deps: []string{"b"}}, {id: "b", deps: []string{"a"}}, {id: "c"}}, err: "ghcr.io/x/a:1 -> ghcr.io/x/b:1 -> ghcr.io/x/a:1"},
		{name: "installsAfter cycle", features: []spec{{id: "a", after: []string{"b"}}, {id: "b", after: []string{"a"}}}, err: "cycle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := order(buildGraph(tc.features), tc.override)
			if tc.err != "" {
				msg, ok := usererr.Message(err)
				if !ok || !strings.Contains(msg, tc.err) {
					t.Fatalf("err = %v, want a user error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), tc.want) {
				t.Fatalf("order = %v, want %v", ids(got), tc.want)
			}
		})
	}
}

func TestCacheKey(t *testing.T) {
	a := Feature{Digest: "sha256:a", Env: []string{"X=1"}}
	b := Feature{Digest: "sha256:b"}
	in := []string{"sha256:img", "user=vscode"}
	k := CacheKey("org1", in, []Feature{a, b})
	if k != CacheKey("org1", []string{"sha256:img", "user=vscode"}, []Feature{a, b}) {
		t.Fatal("not stable")
	}
	a2 := a
	a2.Env = []string{"X=2"}
	for name, other := range map[string]string{
		"order":    CacheKey("org1", in, []Feature{b, a}),
		"options":  CacheKey("org1", in, []Feature{a2, b}),
		"image":    CacheKey("org1", []string{"sha256:img2", "user=vscode"}, []Feature{a, b}),
		"inputs":   CacheKey("org1", []string{"sha256:img", "user=root"}, []Feature{a, b}),
		"boundary": CacheKey("org1", []string{"sha256:imguser=vscode"}, []Feature{a, b}),
		"scope":    CacheKey("org2", in, []Feature{a, b}),
		"subset":   CacheKey("org1", in, []Feature{a}),
	} {
		if other == k {
			t.Errorf("key insensitive to %s", name)
		}
	}
	if !strings.HasPrefix(k, "sha256:") || len(k) != 71 {
		t.Errorf("key %q", k)
	}
}
