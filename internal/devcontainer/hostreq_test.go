package devcontainer

import (
	"strings"
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
	}{
		{"8gb", 8 << 30}, {"8GB", 8 << 30}, {"8Gb", 8 << 30}, {"512mb", 512 << 20}, {"1tb", 1 << 40},
		{"64kb", 64 << 10}, {"1073741824", 1 << 30}, {"0", 0},
	} {
		got, err := ParseSize("hostRequirements.storage", tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"8 GB", "8g", "1.5gb", "lots", "-1gb", "gb", "8gib", ""} {
		_, err := ParseSize("hostRequirements.storage", bad)
		msg, ok := usererr.Message(err)
		if !ok || !strings.Contains(msg, "hostRequirements.storage") || !strings.Contains(msg, "is not a size") || !strings.Contains(msg, `"32gb"`) {
			t.Errorf("ParseSize(%q) error = %v, want a user error naming the property and showing the form", bad, err)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{64 << 30: "64 GB", 1<<40 + 1<<39: "1.5 TB", 512 << 20: "512 MB", 100: "100 bytes", 1: "1 byte", 2 << 10: "2 KB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// An upper-case unit is a requirement cove checks (the reference CLI's merge
// drops it, so read-configuration keeps doing so); a size that is not one
// is refused with its location, never ignored.
func TestCheckedHostRequirements(t *testing.T) {
	c, _, err, _ := load(t, `{"image": "a", "hostRequirements": {"cpus": 2, "storage": "64GB", "memory": "4gb"}}`, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Merge(c, []MetadataEntry{{"hostRequirements": map[string]any{"storage": "8gb", "memory": "8gb"}}})
	if err != nil {
		t.Fatal(err)
	}
	req, err := m.CheckedHostRequirements()
	if err != nil {
		t.Fatal(err)
	}
	if req == nil || req.CPUs != 2 || ParseBytes(req.Storage) != 64<<30 || ParseBytes(req.Memory) != 8<<30 {
		t.Fatalf("requirements = %+v, want 2 CPUs, 64 GB storage, 8 GB memory", req)
	}
	unmet, err := Unmet(req, Class{ID: "standard", CPUs: 4, Memory: 16 << 30, Storage: 40 << 30})
	if err != nil || len(unmet) != 1 || unmet[0] != "needs 64 GB of storage; class standard has 40 GB" {
		t.Errorf("Unmet = %q, %v", unmet, err)
	}

	c, _, err, _ = load(t, `{"image": "a",
  "hostRequirements": {"storage": "64 gigs"}}`, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err = Merge(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.CheckedHostRequirements()
	msg, ok := usererr.Message(err)
	if !ok || !strings.Contains(msg, "devcontainer.json:2:") || !strings.Contains(msg, `"64 gigs" is not a size`) {
		t.Errorf("error = %v, want a user error at devcontainer.json:2 saying the size is not one", err)
	}
}

// read-configuration warns about a size that is not one, with its position.
func TestHostRequirementWarnings(t *testing.T) {
	_, warns, err, _ := load(t, `{"image": "a",
  "hostRequirements": {"memory": "8GB", "storage": "64 gigs", "gpu": {"memory": "lots"}}}`, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range warns {
		got = append(got, w.String())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{`devcontainer.json:2:41: hostRequirements.storage: "64 gigs" is not a size`, `hostRequirements.gpu.memory: "lots" is not a size`} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "hostRequirements.memory") {
		t.Errorf("8GB warned about:\n%s", all)
	}
}
