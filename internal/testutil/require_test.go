package testutil

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// skipRecorder is a testing.TB that records a skip instead of stopping the
// goroutine, so a test can look at what the helpers would have done.
type skipRecorder struct {
	testing.TB
	skipped string
}

func (r *skipRecorder) Helper() {}
func (r *skipRecorder) Skipf(format string, args ...any) {
	if r.skipped == "" {
		r.skipped = fmt.Sprintf(format, args...)
	}
}

func TestRequireRoot(t *testing.T) {
	r := &skipRecorder{TB: t}
	RequireRoot(r, "mounts", "chown")
	if os.Geteuid() == 0 {
		if r.skipped != "" {
			t.Errorf("root was skipped: %q", r.skipped)
		}
		return
	}
	if !strings.Contains(r.skipped, "needs root (mounts, chown)") {
		t.Errorf("skip message %q does not say what needs root", r.skipped)
	}
}

func TestRequireTool(t *testing.T) {
	r := &skipRecorder{TB: t}
	RequireTool(r, "sh")
	if r.skipped != "" {
		t.Fatalf("sh is on every PATH, yet: %q", r.skipped)
	}

	const missing = "cove-no-such-tool"
	RequireTool(r, "sh", missing, "sh")
	if !strings.Contains(r.skipped, "needs "+missing+": not found on PATH") {
		t.Errorf("skip message %q does not name the missing tool", r.skipped)
	}

	// A tool whose probe fails is missing too: a PATH directory holding a
	// "runc" that does not run.
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/runc", []byte("#!/bin/sh\necho broken >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	toolChecks.Delete("runc") // forget an earlier answer of this test binary
	t.Cleanup(func() { toolChecks.Delete("runc") })
	r = &skipRecorder{TB: t}
	RequireTool(r, "runc")
	if !strings.Contains(r.skipped, "--version failed") || !strings.Contains(r.skipped, "broken") ||
		!strings.Contains(r.skipped, "scripts/install-deps.sh test") {
		t.Errorf("skip message %q does not say the probe failed and how to install runc", r.skipped)
	}
}
