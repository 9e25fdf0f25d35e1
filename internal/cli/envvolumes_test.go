package cli

import (
	"strings"
	"testing"

	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// Volumes are listed one a line with kind, name and service; names come
// from the repository, so terminal escapes in them are made harmless.
func TestPrintVolumes(t *testing.T) {
	var sb strings.Builder
	printVolumes(&sb, []*covev1.Volume{
		{Kind: "named", Name: "devcontainer_data", Target: "/var/lib/db", Service: "db"},
		{Kind: "bind", Name: "/workspaces/repo/.devcontainer/seed", Target: "/seed"},
		{Kind: "tmpfs", Target: "/tmp/x"},
		{Kind: "named", Name: "evil\x1b]0;owned\x07", Target: "/e"},
	})
	lines := strings.Split(strings.TrimRight(sb.String(), "\n"), "\n")
	want := []string{
		"Volumes:     /var/lib/db  named  devcontainer_data  (service db)",
		"             /seed  bind  from /workspaces/repo/.devcontainer/seed",
		"             /tmp/x  tmpfs",
	}
	if len(lines) != 4 {
		t.Fatalf("output:\n%s", sb.String())
	}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("line %d = %q, want %q", i, lines[i], w)
		}
	}
	if strings.ContainsAny(lines[3], "\x1b\x07") {
		t.Errorf("escape sequence reached the terminal: %q", lines[3])
	}
}
