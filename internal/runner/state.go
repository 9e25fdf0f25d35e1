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

	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/idmap"
)

// envState is what the runner keeps on disk for one environment, so a
// restarted runner knows what it had done: the header (id, uid range) and
// one section per step, each written only by the step that owns it (the
// step files define them). The reconcile loop saves it after every step
// (envdir versions and migrates the file).
type envState struct {
	envdir.Header
	Content   contentState       `json:"content"`
	Mount     mountState         `json:"mount"`
	Network   networkState       `json:"network"`
	Image     envconfig.Resolved `json:"image"`
	Features  featuresState      `json:"features"`
	Lifecycle lifecycleState     `json:"lifecycle"`
	Start     startState         `json:"start"`
	Rebuild   rebuildState       `json:"rebuild"`
	Failure   failureState       `json:"failure"`
	Disk      diskState          `json:"disk"`
	Backup    backupState        `json:"backup"` // step_backup.go, step_restore.go
}

func loadState(path string) (*envState, error) {
	var st envState
	if err := envdir.Load(path, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func saveState(path string, st *envState) error { return envdir.Save(path, st) }

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
func (r *Runner) recoverRange(lay envdir.Layout) (m idmap.Range, ok bool) {
	valid := func(h uint32) bool {
		return h >= r.cfg.RangeBase && (h-r.cfg.RangeBase)%r.cfg.RangeSize == 0 && int((h-r.cfg.RangeBase)/r.cfg.RangeSize) < r.cfg.RangeSlots
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(lay.Dir, &st); err == nil && st.Gid != 0 && valid(st.Gid) {
		return idmap.Range{HostID: st.Gid, Size: r.cfg.RangeSize}, true
	}
	b, err := os.ReadFile(filepath.Join(lay.Runtime(), "bundle", "config.json"))
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
