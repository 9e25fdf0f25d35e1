// Package benchkit holds what cove's benchmarks share: building cove,
// serving a test image from an in-process registry on loopback, running
// `cove up` on free loopback ports with a temporary data directory and a
// private runc root, driving environments through the API, bare `runc`
// baselines, cgroup readings, and cleanup that also runs on failure or
// interrupt.
package benchkit

import (
	"fmt"
	"os"
)

// Cleanups runs registered functions in reverse order.
type Cleanups []func()

// Add registers f.
func (c *Cleanups) Add(f func()) { *c = append(*c, f) }

// Run runs every registered function, last first, and forgets them.
func (c *Cleanups) Run() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
	*c = nil
}

// Progress prints a progress line ("# …") on standard error.
func Progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "# "+format+"\n", args...)
}
