package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// printVolumes lists an environment's volumes for `cove env get`, one a
// line, the first under "Volumes:": target, kind, name or source, and the
// Docker Compose service it belongs to.
func printVolumes(w io.Writer, vs []*covev1.Volume) {
	label := "Volumes:"
	for _, v := range vs {
		fmt.Fprintf(w, "%-13s%s\n", label, volumeLine(v))
		label = ""
	}
}

// volumeLine is a volume on one line, remote text made safe:
// "/var/lib/db  named devcontainer_data  (service db)".
func volumeLine(v *covev1.Volume) string {
	parts := []string{termsafe.Line(v.GetTarget()), termsafe.Line(v.GetKind())}
	if n := v.GetName(); n != "" {
		if v.GetKind() == "bind" {
			n = "from " + n
		}
		parts = append(parts, termsafe.Line(n))
	}
	if s := v.GetService(); s != "" {
		parts = append(parts, "(service "+termsafe.Line(s)+")")
	}
	return strings.Join(parts, "  ")
}
