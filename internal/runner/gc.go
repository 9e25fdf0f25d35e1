package runner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/features"
	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/runtime"
)

// Garbage collection of the runner's disk: image blobs and layers, chowned
// layer copies, installed-features layers, the feature download cache and
// what crashed work left behind.
//
// What is in use is read from every environment's state file; a state file
// that cannot be read stops the round (that environment may use anything).
// Work that picks up or creates such items before its environment's state
// records them (pulls, builds, feature resolution, mounts, feature
// snapshots) holds gcMu for reading (useStore); a round takes it for
// writing only while it decides and moves items into a trash directory, and
// skips its turn rather than wait. On top of that, nothing changed within
// gcGrace is removed.
const (
	gcGrace         = time.Hour
	gcInterval      = time.Hour
	gcCheckInterval = 5 * time.Minute // disk fill checks, and retries when busy
	// gcFillThreshold is how full (used / size) the data dir's file
	// system may be before a round runs ahead of schedule.
	gcFillThreshold = 0.85
)

// errGCBusy: image, feature or mount work holds the store.
var errGCBusy = errors.New("image, feature or mount work in progress")

// gcRefs is what environments on disk use.
type gcRefs struct {
	keep          image.Keep
	featureLayers map[string]bool // names under images/features
}

// janitor keeps the host tidy while the runner runs: garbage collection
// of images and feature caches (gc.go), log caps (logcap.go) and the
// environments' cgroup parent (cgroupparent.go).
type janitor struct {
	dataDir string
	log     *slog.Logger
	images  imageStore
	rt      runtime.Runtime
	gc      *gcLock
}

// janitor is the runner's janitor.
func (r *Runner) janitor() *janitor {
	return &janitor{dataDir: r.cfg.DataDir, log: r.log, images: r.images, rt: r.rt, gc: r.gc}
}

func rangeDirName(m idmap.Range) string {
	return strconv.FormatUint(uint64(m.HostID), 10) + "-" + strconv.FormatUint(uint64(m.Size), 10)
}

// gcReferences reads every environment's state. It fails if one cannot be
// read: then nothing may be collected.
func (j *janitor) gcReferences() (*gcRefs, error) {
	envs := filepath.Join(j.dataDir, "envs")
	ents, err := os.ReadDir(envs)
	if err != nil {
		return nil, err
	}
	refs := &gcRefs{
		keep:          image.Keep{Manifests: map[string]bool{}, Layers: map[string]bool{}, Shifted: map[string]map[string]bool{}},
		featureLayers: map[string]bool{},
	}
	add := func(m idmap.Range, manifest string, layers []string) {
		if manifest != "" {
			refs.keep.Manifests[manifest] = true
		}
		rg := rangeDirName(m)
		if refs.keep.Shifted[rg] == nil {
			refs.keep.Shifted[rg] = map[string]bool{}
		}
		// By base name: a data dir reached by another path (a symlink,
		// a moved mount) still names the same layers.
		for _, l := range layers {
			b := filepath.Base(l)
			refs.keep.Layers[b] = true
			refs.featureLayers[b] = true
			refs.keep.Shifted[rg][b] = true
		}
	}
	for _, e := range ents {
		lay := envdir.Layout{Dir: filepath.Join(envs, e.Name())}
		st, err := loadState(lay.State())
		if errors.Is(err, fs.ErrNotExist) {
			// A directory being made or removed has no state and uses
			// nothing; one with a container or a root file system does.
			if _, berr := os.Lstat(filepath.Join(lay.Runtime(), "bundle", "config.json")); berr == nil || j.images.mounted(lay.Rootfs()) {
				return nil, fmt.Errorf("environment %s has a container but no state file", e.Name())
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("environment %s: %w", e.Name(), err)
		}
		add(st.IDMap, st.Image.Digest, st.Image.Layers)
		if st.Image.DC != nil && st.Image.DC.FeaturesKey != "" {
			// Named by featuresLayerName, or by the key itself (runners
			// before it).
			refs.featureLayers[featuresLayerName(st.Image.DC.FeaturesKey)] = true
			refs.featureLayers[st.Image.DC.FeaturesKey] = true
		}
		if st.Image.Compose != nil {
			for _, s := range st.Image.Compose.Services {
				add(st.IDMap, s.ImageDigest, s.Layers)
			}
		}
	}
	return refs, nil
}

// gcItem is one removed item.
type gcItem struct {
	path  string
	bytes int64
}

// trash is a directory that items are renamed into, quickly and under
// gcMu, and then removed without holding anything up.
type trash struct {
	parent, dir string
	items       []trashItem
}

type trashItem struct{ from, at string }

func (t *trash) add(path string) error {
	if t.dir == "" {
		if err := os.MkdirAll(t.parent, 0o700); err != nil {
			return err
		}
		d, err := os.MkdirTemp(t.parent, "gc-")
		if err != nil {
			return err
		}
		t.dir = d
	}
	if path == t.dir {
		return nil
	}
	at := filepath.Join(t.dir, strconv.Itoa(len(t.items))+"-"+filepath.Base(path))
	if err := os.Rename(path, at); err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	t.items = append(t.items, trashItem{from: path, at: at})
	return nil
}

// empty removes what was moved in, measuring each item first.
func (t *trash) empty() ([]gcItem, error) {
	if t == nil || t.dir == "" {
		return nil, nil
	}
	var out []gcItem
	var errs []error
	for _, it := range t.items {
		n, err := diskUsage(it.at)
		if err == nil {
			err = os.RemoveAll(it.at)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("gc: remove %s: %w", it.from, err))
			continue
		}
		out = append(out, gcItem{path: it.from, bytes: n})
	}
	if len(errs) == 0 {
		if err := os.Remove(t.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

// diskUsage is the space the tree at p takes (hard links counted once). It
// fails if anything at or below p is a mount point, which RemoveAll must
// never descend into (checkNoMounts: same-device bind mounts too).
func diskUsage(p string) (int64, error) {
	if _, err := os.Lstat(p); err != nil {
		return 0, err
	}
	if err := checkNoMounts(p); err != nil {
		return 0, fmt.Errorf("%s holds a mount point: %w", p, err)
	}
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var total int64
	err := filepath.WalkDir(p, func(q string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(q, &st); err != nil {
			return err
		}
		if st.Nlink > 1 && st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			k := inode{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		total += st.Blocks * 512
		return nil
	})
	return total, err
}

// collectGarbage removes what no environment uses and nothing changed
// after cutoff. It returns errGCBusy, having done nothing, while work
// holds the store.
func (j *janitor) collectGarbage(ctx context.Context, cutoff time.Time) ([]gcItem, error) {
	if !j.gc.mu.TryLock() {
		return nil, errGCBusy
	}
	imgTrash := &trash{parent: filepath.Join(j.dataDir, "images", "tmp")}
	cacheDir := filepath.Join(j.dataDir, "features")
	featTrash := &trash{parent: filepath.Join(cacheDir, "tmp")}
	err := func() error {
		defer j.gc.mu.Unlock()
		refs, err := j.gcReferences()
		if err != nil {
			return err
		}
		if err := j.images.CollectGarbage(ctx, refs.keep, cutoff, imgTrash.add); err != nil {
			return err
		}
		// Installed-features layers (images/features/<key>) and
		// interrupted snapshots (<key>.tmp-*).
		dir := filepath.Join(j.dataDir, "images", "features")
		ents, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		for _, e := range ents {
			if refs.featureLayers[e.Name()] {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if changedAt(fi).Before(cutoff) {
				if err := imgTrash.add(filepath.Join(dir, e.Name())); err != nil {
					return err
				}
			}
		}
		stale, err := features.StaleCache(cacheDir, cutoff)
		if err != nil {
			return err
		}
		for _, p := range stale {
			if err := featTrash.add(p); err != nil {
				return err
			}
		}
		return nil
	}()
	// What was moved goes, even after an error.
	a, errA := imgTrash.empty()
	b, errB := featTrash.empty()
	return append(a, b...), errors.Join(err, errA, errB)
}

// changedAt is the later of fi's modification and status change times:
// copies keep modification times from their sources, but only the kernel
// sets the status change time (creation, rename).
func changedAt(fi fs.FileInfo) time.Time {
	t := fi.ModTime()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if c := time.Unix(st.Ctim.Unix()); c.After(t) {
			t = c
		}
	}
	return t
}

// gcRound runs one collection and logs what it removed.
func (j *janitor) gcRound(ctx context.Context, why string) error {
	began := time.Now()
	removed, err := j.collectGarbage(ctx, began.Add(-gcGrace))
	var total int64
	for _, it := range removed {
		j.log.Info("garbage removed", "path", it.path, "bytes", it.bytes)
		total += it.bytes
	}
	if errors.Is(err, errGCBusy) {
		j.log.Info("garbage collection postponed", "reason", err, "why", why)
		return err
	}
	if err != nil {
		j.log.Error("garbage collection stopped: nothing more is removed this round", "err", err, "why", why, "removed", len(removed), "bytes", total)
		return err
	}
	j.log.Info("garbage collection done", "why", why, "removed", len(removed), "bytes", total, "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// gcLoop collects garbage at start, every gcInterval, and sooner when the
// data dir's file system fills up. A round that finds the store busy is
// retried at the next check.
func (j *janitor) gcLoop(ctx context.Context) {
	due := time.Now()
	tick := time.NewTicker(gcCheckInterval)
	defer tick.Stop()
	for {
		why := ""
		if !time.Now().Before(due) {
			why = "scheduled"
		} else if used, ok := diskUsed(j.dataDir); ok && used > gcFillThreshold {
			why = fmt.Sprintf("data dir file system %.0f%% full", used*100)
		}
		if why != "" && !errors.Is(j.gcRound(ctx, why), errGCBusy) {
			due = time.Now().Add(gcInterval)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// diskUsed is the used fraction of the file system holding dir (space
// reserved for root counts as used).
func diskUsed(dir string) (float64, bool) {
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil || st.Blocks == 0 {
		return 0, false
	}
	return 1 - float64(st.Bavail)/float64(st.Blocks), true
}
