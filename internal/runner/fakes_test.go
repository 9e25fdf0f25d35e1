package runner

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/runtime"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The far side of the runner's host boundaries, in memory: they survive a
// runner "killed" by a test as containers and mounts survive a real one.

// running reports whether rt runs container id, with its state.
func running(rt runtime.Runtime, id string) (runtime.State, bool) {
	s, err := rt.State(context.Background(), id)
	return s, err == nil && s.Status == runtime.StatusRunning
}

// fakeImages "pulls" every reference as one layer directory and mounts by
// making the target directory.
type fakeImages struct {
	dir     string
	mu      sync.Mutex
	mounts  map[string]bool
	layers  map[string]bool
	pullErr error // returned by Pull when set
}

func newFakeImages(dir string) *fakeImages {
	return &fakeImages{dir: dir, mounts: map[string]bool{}, layers: map[string]bool{}}
}

func (f *fakeImages) Pull(_ context.Context, ref string) (*image.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pullErr != nil {
		return nil, f.pullErr
	}
	l := f.dir + "/layer-" + fmt.Sprint(len(ref))
	f.layers[l] = true
	return &image.Image{Ref: ref, Digest: "sha256:feed", Layers: []string{l}}, nil
}

func (f *fakeImages) Import(ctx context.Context, name string, _ v1.Image) (*image.Image, error) {
	return f.Pull(ctx, name)
}

func (f *fakeImages) CollectGarbage(context.Context, image.Keep, time.Time, func(string) error) error {
	return nil
}

func (f *fakeImages) has(layers []string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range layers {
		if !f.layers[l] {
			return false
		}
	}
	return len(layers) > 0
}

func (f *fakeImages) mount(_ context.Context, cfg image.RootfsConfig) error {
	if err := os.MkdirAll(cfg.Target, 0o755); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mounts[cfg.Target] = true
	return nil
}

func (f *fakeImages) unmount(_ context.Context, cfg image.RootfsConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.mounts, cfg.Target)
	return nil
}

func (f *fakeImages) mounted(target string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mounts[target]
}

// fakeAgents answers for every container the fake runtime runs; idOf
// maps an agent socket to its container's id.
type fakeAgents struct {
	rt   runtime.Runtime
	idOf func(sock string) string
	exec execer // runs commands, if set
}

func (f fakeAgents) probe(_ context.Context, ep agentclient.Endpoint) error {
	if _, err := os.Lstat(ep.Socket); err != nil {
		return err
	}
	if _, ok := running(f.rt, f.idOf(ep.Socket)); !ok {
		return fmt.Errorf("no agent at %s", ep.Socket)
	}
	return nil
}

func (f fakeAgents) client(context.Context, string, agentclient.Endpoint) (execer, error) {
	if f.exec == nil {
		return nil, fmt.Errorf("fake agents run no commands")
	}
	return f.exec, nil
}

// scriptedExec answers commands with exit codes in turn and records them.
type scriptedExec struct {
	codes []int
	ran   []string
}

func (s *scriptedExec) Exec(_ context.Context, req agentclient.ExecRequest) (int, error) {
	s.ran = append(s.ran, req.User+": "+req.Shell)
	if len(s.codes) == 0 {
		return 0, nil
	}
	c := s.codes[0]
	s.codes = s.codes[1:]
	return c, nil
}

func (fakeAgents) drop(string) {}
