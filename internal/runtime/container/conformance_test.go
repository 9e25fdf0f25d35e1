package container

import (
	"testing"

	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/runtime/runtimetest"
)

func TestConformance(t *testing.T) {
	h := newTestHost(t)
	runtimetest.Run(t,
		func(t *testing.T) runtime.Runtime { return h.runtime(t) },
		h.spec)
}
