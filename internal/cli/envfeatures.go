package cli

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// printFeatures lists an environment's installed features for `cove env
// get`, one a line, the first under "Features:".
func printFeatures(w io.Writer, fs []*covev1.InstalledFeature) {
	label := "Features:"
	for _, f := range fs {
		fmt.Fprintf(w, "%-13s%s\n", label, featureLine(f))
		label = ""
	}
}

// featureLine is an installed feature on one line, remote text made safe:
// "id version sha256:0123456789ab… option=value ...", the options as given
// in devcontainer.json, by name (a value quoted when it is empty or holds
// spaces or quotes).
func featureLine(f *covev1.InstalledFeature) string {
	parts := []string{termsafe.Line(f.GetId())}
	if v := f.GetVersion(); v != "" {
		parts = append(parts, termsafe.Line(v))
	}
	if d := f.GetDigest(); d != "" {
		if algo, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
			d = algo + ":" + hex[:12] + "…"
		}
		parts = append(parts, termsafe.Line(d))
	}
	opts := f.GetOptions()
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := opts[k]
		if v == "" || strings.ContainsAny(v, " \t\"'") {
			v = strconv.Quote(v)
		}
		parts = append(parts, termsafe.Line(k+"="+v))
	}
	return strings.Join(parts, " ")
}
