package cli

import (
	"bytes"
	"strings"
	"testing"

	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// TestPrintFeatures: `cove env get` lists the installed features one a
// line under "Features:"; their ids, versions and options come from the
// repository and the features' authors, so escape sequences and line
// breaks in them never reach the terminal.
func TestPrintFeatures(t *testing.T) {
	fs := []*covev1.InstalledFeature{
		{Id: "ghcr.io/devcontainers/features/Go:1", Version: "1.2.3", Digest: "sha256:0123456789abcdef0123456789abcdef", Options: map[string]string{"version": "1.22", "b": "two words"}},
		{Id: "./local\x1b[2J\nFailure:     forged", Version: "1\x07", Options: map[string]string{"x\x1b]0;t\x07": "\r"}},
	}
	var b bytes.Buffer
	printFeatures(&b, fs)
	out := b.String()
	for _, want := range []string{
		"Features:    ghcr.io/devcontainers/features/Go:1 1.2.3 sha256:0123456789ab… b=\"two words\" version=1.22\n",
		"             ./local",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.ContainsAny(out, "\x1b\x07\r") || strings.Contains(out, "\nFailure:") {
		t.Errorf("remote text reached the terminal as is:\n%q", out)
	}
}
