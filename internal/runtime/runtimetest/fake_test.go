package runtimetest

import (
	"testing"

	"github.com/covedev/cove/internal/runtime"
)

// TestFakeConforms runs the state part of the conformance suite against
// Fake, so that tests built on it see what a real runtime does.
func TestFakeConforms(t *testing.T) {
	f := NewFake()
	RunState(t, func(*testing.T) runtime.Runtime { return f.Instance() }, func(t *testing.T, id string) runtime.Spec {
		return runtime.Spec{ID: id, Rootfs: t.TempDir(), Process: runtime.Process{Args: []string{"/bin/sh", "-c", Script}}}
	})
}
