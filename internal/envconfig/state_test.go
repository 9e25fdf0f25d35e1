package envconfig

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/covedev/cove/internal/compose"
	"github.com/covedev/cove/internal/envdir"
)

// TestStateImageSection: testdata/state-v1.json is a state file as the
// runner writes it (version 1, its own imageState, dcState, composeState,
// svcState, dcMount and dcPorts, every field set). Its image section must
// decode into Resolved with nothing lost and encode back to the very same
// bytes, so a runner that switches to these types reads and writes the
// same file.
func TestStateImageSection(t *testing.T) {
	blob, err := os.ReadFile("testdata/state-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	var sections map[string]json.RawMessage
	if err := json.Unmarshal(blob, &sections); err != nil {
		t.Fatal(err)
	}
	var r Resolved
	if err := json.Unmarshal(sections["image"], &r); err != nil {
		t.Fatal(err)
	}
	checkResolved(t, &r)
	got, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := json.Compact(&want, sections["image"]); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("the image section encodes differently:\ngot  %s\nwant %s", got, want.Bytes())
	}
}

// TestStateFromUnversioned: a state file of the runners before versioning
// (f9135bc: resolution's fields flat beside the others, the lifecycle's
// progress inside "devcontainer") decodes into Resolved once envdir has
// migrated it.
func TestStateFromUnversioned(t *testing.T) {
	blob, err := os.ReadFile("testdata/state-v0-f9135bc.json")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		envdir.Header
		Image Resolved `json:"image"`
	}
	if err := envdir.Decode(blob, &st); err != nil {
		t.Fatal(err)
	}
	if st.ID != "envc" || st.Image.Ref != "app:1" || st.Image.Digest != "sha256:app" || len(st.Image.Layers) != 1 {
		t.Errorf("decoded %+v", st)
	}
	checkResolved(t, &st.Image)
}

// checkResolved spot-checks that the fixtures' values arrived where they
// belong (a renamed field decodes to its zero value).
func checkResolved(t *testing.T, r *Resolved) {
	t.Helper()
	if r.User != "dev" || len(r.Env) != 2 || r.DC == nil || r.Compose == nil {
		t.Fatalf("decoded %+v", r)
	}
	dc := r.DC
	if !dc.FeaturesPending || dc.FeaturesKey == "" || dc.MountTarget != "/src" || dc.Ports.Other == nil ||
		dc.Ports.Attrs["4000-4010"].Label != "range" || len(dc.Mounts) != 3 || !dc.Mounts[2].ReadOnly ||
		dc.Hooks.PostCreate[0].Parallel["a"].Args[1] != "a" || dc.Hooks.WaitFor != "updateContentCommand" ||
		dc.Customizations == "" || len(dc.Extensions) != 1 || len(dc.Entrypoints) != 1 || len(dc.ContainerEnv) != 3 {
		t.Errorf("devcontainer section decoded as %+v", dc)
	}
	cs := r.Compose
	db, ok := cs.Service("db")
	if !ok || cs.DevDependsOn["db"] != compose.ConditionHealthy || db.Healthcheck == nil || db.Healthcheck.Retries != 3 ||
		db.Mounts[1].Source != "anon-db-anon" || db.ImageDigest != "sha256:db" || len(db.Layers) != 1 || len(db.Env) != 3 {
		t.Errorf("compose section decoded as %+v", cs)
	}
}

func TestPortsAttributes(t *testing.T) {
	p := &Ports{Forward: []int{3000}, Other: &PortAttrs{Label: "other"}, Attrs: map[string]PortAttrs{
		"3000": {Label: "web", OnAutoForward: "notify"}, "4000-4005": {Label: "range"}, "x": {Label: "not a port"}, "5000-x": {Label: "bad range"},
	}}
	tests := []struct {
		port      int
		forwarded bool
		want      *PortAttrs
	}{
		{3000, true, &PortAttrs{Label: "web", OnAutoForward: "notify"}},
		{4000, false, &PortAttrs{Label: "range"}},
		{4005, false, &PortAttrs{Label: "range"}},
		{4006, false, &PortAttrs{Label: "other"}},
		{5000, false, &PortAttrs{Label: "other"}},
	}
	for _, tt := range tests {
		fw, a := p.Attributes(tt.port)
		if fw != tt.forwarded || a == nil || *a != *tt.want {
			t.Errorf("Attributes(%d) = %v %+v, want %v %+v", tt.port, fw, a, tt.forwarded, tt.want)
		}
	}
	if fw, a := (&Ports{Forward: []int{1}}).Attributes(2); fw || a != nil {
		t.Errorf("no attributes: %v %+v", fw, a)
	}
	var none *Ports
	if fw, a := none.Attributes(1); fw || a != nil || none.ForwardPorts() != nil {
		t.Error("nil Ports has attributes")
	}
	// Several patterns hold the port: the first in sorted order, every time.
	two := &Ports{Attrs: map[string]PortAttrs{"8000-8100": {Label: "b"}, "8000-8080": {Label: "a"}}}
	for range 20 {
		if _, a := two.Attributes(8050); a == nil || a.Label != "a" {
			t.Fatalf("overlapping patterns: %+v", a)
		}
	}
}
