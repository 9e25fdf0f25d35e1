package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"

	"github.com/covedev/cove/internal/atomicfile"
	"github.com/covedev/cove/internal/idmap"
)

// envState is what the runner keeps on disk for one environment, so a
// restarted runner knows what it had done. It is written atomically.
type envState struct {
	ID    string      `json:"id"`
	IDMap idmap.Range `json:"idMap"`
	// Content
	RepoName      string `json:"repoName,omitempty"`
	ContentReady  bool   `json:"contentReady,omitempty"`
	WorkspaceUser string `json:"workspaceUser,omitempty"` // "uid:gid" the workspace was given to
	// Image
	Image       string   `json:"image,omitempty"`
	ImageDigest string   `json:"imageDigest,omitempty"`
	Layers      []string `json:"layers,omitempty"`
	User        string   `json:"user,omitempty"` // user sessions run as
	IP          string   `json:"ip,omitempty"`   // address on the runner's network
	Env         []string `json:"env,omitempty"`
	// What devcontainer.json (merged with image and feature metadata) asks.
	DC *dcState `json:"devcontainer,omitempty"`
	// What a Docker Compose configuration asks (nil for one container).
	Compose *composeState `json:"compose,omitempty"`
	// Rebuild generation the container file system was built from.
	BuiltGeneration int64 `json:"builtGeneration,omitempty"`
	// Started once at least (CREATING vs STARTING).
	StartedOnce bool `json:"startedOnce,omitempty"`
	// A failed attempt at this spec version is not retried until the spec
	// changes.
	FailedSpecVersion int64  `json:"failedSpecVersion,omitempty"`
	FailureMessage    string `json:"failureMessage,omitempty"`
}

// layout names the host paths of one environment.
type layout struct{ dir string }

func (l layout) state() string     { return filepath.Join(l.dir, "state.json") }
func (l layout) workspace() string { return filepath.Join(l.dir, "workspace") }
func (l layout) staging() string   { return filepath.Join(l.dir, "staging") }
func (l layout) upper() string     { return filepath.Join(l.dir, "upper") }
func (l layout) work() string      { return filepath.Join(l.dir, "work") }
func (l layout) lower() string     { return filepath.Join(l.dir, "l") }
func (l layout) rootfs() string    { return filepath.Join(l.dir, "rootfs") }
func (l layout) run() string       { return filepath.Join(l.dir, "run") }
func (l layout) etc() string       { return filepath.Join(l.dir, "etc") }
func (l layout) runtime() string   { return filepath.Join(l.dir, "runtime") }

// agentSocket is where the runner dials the container's agent: in the
// root-owned environment directory, never in the environment's run
// directory (the agent gets the listening socket as a descriptor).
func (l layout) agentSocket() string { return filepath.Join(l.dir, "agent.sock") }
func (l layout) hosts() string       { return filepath.Join(l.dir, "hosts") }
func (l layout) hostname() string    { return filepath.Join(l.dir, "hostname") }
func (l layout) resolvConf() string  { return filepath.Join(l.dir, "resolv.conf") }
func (l layout) features() string    { return filepath.Join(l.dir, "features") }
func (l layout) logDir() string      { return filepath.Join(l.dir, "log") }
func (l layout) logFile() string     { return filepath.Join(l.logDir(), "lifecycle.log") }

func loadState(path string) (*envState, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st envState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return &st, nil
}

func saveState(path string, st *envState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// rangeAllocator hands out distinct host uid/gid ranges, one per
// environment. Allocations are persisted in each environment's state file,
// so the allocator is rebuilt from disk at start.
type rangeAllocator struct {
	mu    sync.Mutex
	base  uint32
	size  uint32
	slots int
	used  map[uint32]string // HostID -> env id
}

func newRangeAllocator(base, size uint32, slots int) *rangeAllocator {
	return &rangeAllocator{base: base, size: size, slots: slots, used: map[uint32]string{}}
}

func (a *rangeAllocator) reserve(id string, r idmap.Range) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if owner, ok := a.used[r.HostID]; ok && owner != id {
		return fmt.Errorf("uid range %s of %s already used by %s", r, id, owner)
	}
	a.used[r.HostID] = id
	return nil
}

func (a *rangeAllocator) allocate(id string) (idmap.Range, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := 0; i < a.slots; i++ {
		h := a.base + uint32(i)*a.size
		if _, ok := a.used[h]; !ok {
			a.used[h] = id
			return idmap.Range{HostID: h, Size: a.size}, nil
		}
	}
	return idmap.Range{}, errors.New("no free uid range: too many environments on this runner")
}

func (a *rangeAllocator) release(r idmap.Range) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.used, r.HostID)
}

// inUse lists allocated ranges (for tests and diagnostics).
func (a *rangeAllocator) inUse() []uint32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []uint32
	for h := range a.used {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// recoverRange finds the uid range of an environment whose state file is
// unreadable, from what else records it: the group of its directory
// (protectEnvDir), else the runtime spec of its container (which exists
// while a container may run with the range). ok is false when neither
// does: no container of it holds a range then.
func (r *Runner) recoverRange(lay layout) (m idmap.Range, ok bool) {
	valid := func(h uint32) bool {
		return h >= r.cfg.RangeBase && (h-r.cfg.RangeBase)%r.cfg.RangeSize == 0 && int((h-r.cfg.RangeBase)/r.cfg.RangeSize) < r.cfg.RangeSlots
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(lay.dir, &st); err == nil && st.Gid != 0 && valid(st.Gid) {
		return idmap.Range{HostID: st.Gid, Size: r.cfg.RangeSize}, true
	}
	b, err := os.ReadFile(filepath.Join(lay.runtime(), "bundle", "config.json"))
	if err != nil {
		return m, false
	}
	var spec struct {
		Linux struct {
			UIDMappings []struct {
				HostID uint32 `json:"hostID"`
				Size   uint32 `json:"size"`
			} `json:"uidMappings"`
		} `json:"linux"`
	}
	if json.Unmarshal(b, &spec) != nil || len(spec.Linux.UIDMappings) == 0 {
		return m, false
	}
	um := spec.Linux.UIDMappings[0]
	return idmap.Range{HostID: um.HostID, Size: um.Size}, true
}
