package runtimetest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/covedev/cove/internal/runtime"
)

// Fake is a runtime.Runtime that runs no processes: an environment is a
// status and a made-up pid, kept in memory. Several Fakes made by
// Instance share their environments, as runtime instances over the same
// state directory do after a runner restart. It passes the suite's state
// machine (RunState); what needs processes (console logs, cgroups, signals,
// descriptors) it does not pretend to do. For tests of what drives a
// runtime (the runner's steps) without root.
type Fake struct{ s *fakeState }

type fakeState struct {
	mu      sync.Mutex
	envs    map[string]runtime.State
	specs   map[string]runtime.Spec
	nextPid int
	starts  map[string]int
}

// NewFake returns an empty fake runtime.
func NewFake() *Fake {
	return &Fake{&fakeState{envs: map[string]runtime.State{}, specs: map[string]runtime.Spec{}, nextPid: 1000, starts: map[string]int{}}}
}

// Instance is another runtime instance over f's environments.
func (f *Fake) Instance() *Fake { return &Fake{f.s} }

// Name implements runtime.Runtime.
func (f *Fake) Name() string { return "fake" }

// Start implements runtime.Runtime. The root file system must exist.
func (f *Fake) Start(_ context.Context, spec runtime.Spec) error {
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.envs[spec.ID].Status == runtime.StatusRunning {
		return nil
	}
	if spec.Rootfs != "" {
		if _, err := os.Stat(spec.Rootfs); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
	}
	s.nextPid++
	s.envs[spec.ID] = runtime.State{Status: runtime.StatusRunning, Pid: s.nextPid}
	s.specs[spec.ID] = spec
	s.starts[spec.ID]++
	return nil
}

// State implements runtime.Runtime.
func (f *Fake) State(_ context.Context, id string) (runtime.State, error) {
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.envs[id]; ok {
		return st, nil
	}
	return runtime.State{Status: runtime.StatusAbsent}, nil
}

// Stop implements runtime.Runtime.
func (f *Fake) Stop(_ context.Context, id string, _ time.Duration) error {
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.envs[id]; ok {
		s.envs[id] = runtime.State{Status: runtime.StatusStopped}
	}
	return nil
}

// Delete implements runtime.Runtime.
func (f *Fake) Delete(_ context.Context, id string) error {
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.envs, id)
	delete(s.specs, id)
	return nil
}

// List implements runtime.Runtime.
func (f *Fake) List(context.Context) ([]string, error) {
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id := range s.envs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// Set puts environment id in state st, as if a runtime had left it so
// (for tests that start from a host some earlier process prepared).
func (f *Fake) Set(id string, st runtime.State) {
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.envs[id] = st
}

// Starts is how many times Start started environment id.
func (f *Fake) Starts(id string) int {
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts[id]
}

// Spec is the spec environment id was last started with.
func (f *Fake) Spec(id string) (runtime.Spec, bool) {
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	sp, ok := s.specs[id]
	return sp, ok
}
