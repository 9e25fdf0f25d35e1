package envconfig

import (
	"go/build"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/covedev/cove/"

// hostPackages touch the host: resolution must never reach them, directly
// or through another package of the module.
var hostPackages = []string{"internal/runtime", "internal/netenv", "internal/image", "internal/content", "internal/confine",
	"internal/build", "internal/runner", "internal/server", "internal/store", "internal/features", "internal/hostfetch",
	"internal/mountinfo", "internal/resources", "internal/agent", "internal/agentclient"}

// hostImports are what this package and internal/guest must not import
// themselves.
var hostImports = []string{"os/exec", "syscall", "golang.org/x/sys/unix", "github.com/vishvananda/netlink", "github.com/google/nftables"}

// TestPure: envconfig and guest import no host package, directly or
// through the module's packages they use, and no process, syscall or
// network-configuration package themselves.
func TestPure(t *testing.T) {
	for _, root := range []string{"internal/envconfig", "internal/guest"} {
		pkg, err := build.Import(module+root, ".", 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range pkg.Imports {
			if slices.Contains(hostImports, imp) {
				t.Errorf("%s imports %s", root, imp)
			}
		}
		// The module's packages it reaches.
		seen := map[string][]string{} // package → the chain that reached it
		queue := [][]string{{root}}
		for len(queue) > 0 {
			chain := queue[0]
			queue = queue[1:]
			p, err := build.Import(module+chain[len(chain)-1], ".", 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range p.Imports {
				rel, ok := strings.CutPrefix(imp, module)
				if !ok || seen[rel] != nil {
					continue
				}
				next := append(slices.Clone(chain), rel)
				seen[rel] = next
				if slices.Contains(hostPackages, rel) {
					t.Errorf("%s reaches the host package %s: %s", root, rel, strings.Join(next, " → "))
					continue
				}
				queue = append(queue, next)
			}
		}
	}
}
