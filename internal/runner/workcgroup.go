package runner

import (
	"context"
	"log/slog"
	"path"
	"time"

	"github.com/covedev/cove/internal/resources"
)

// The runner's own heavy work runs in limited cgroups of its own below the
// environments' cgroup parent (resources.WorkCgroupPath): Dockerfile
// builds (buildkitd and every RUN step) today; image unpacking, backups
// and restores are meant to use the same mechanism. A build can then use
// no more than its share of CPU, memory and disk bandwidth, however
// heavy, and the environments' terminals and services keep theirs.

// WorkLimits limit one kind of the runner's heavy work as a whole. A zero
// field is unlimited.
type WorkLimits struct {
	CPUMillis   int64 // 1000 = one CPU
	MemoryBytes int64
	Pids        int64
	// Bandwidth on the disk holding the data dir, bytes per second.
	ReadBPS, WriteBPS uint64
}

// workCgroup creates the work cgroup name with limits l below parent; IO
// limits apply to the disk holding dataDir. When that directory is on no
// block device of its own the work runs without IO limits, with a warning
// (the default limits are on for every runner, which must still build).
func workCgroup(log *slog.Logger, parent, name, dataDir string, l WorkLimits) (*resources.WorkCgroup, error) {
	lim := resources.Limits{CPUMillis: l.CPUMillis, MemoryBytes: l.MemoryBytes, Pids: l.Pids}
	if l.ReadBPS > 0 || l.WriteBPS > 0 {
		maj, min, err := resources.BlockDevice(dataDir)
		if err != nil {
			log.Warn("the runner's "+name+" work runs without IO limits", "err", err)
		} else {
			lim.IO = []resources.DeviceIO{{Major: maj, Minor: min, ReadBPS: l.ReadBPS, WriteBPS: l.WriteBPS}}
		}
	}
	w, err := resources.CreateWorkCgroup(parent, name, lim)
	if err != nil {
		return nil, err
	}
	log.Info("work cgroup ready", "cgroup", w.Path(), "cpuMillis", l.CPUMillis, "memoryBytes", l.MemoryBytes,
		"pids", l.Pids, "readBPS", l.ReadBPS, "writeBPS", l.WriteBPS, "io", len(lim.IO) > 0)
	return w, nil
}

// removeWorkCgroup removes w once what ran in it has exited.
func removeWorkCgroup(log *slog.Logger, w *resources.WorkCgroup) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := w.Remove(ctx); err != nil {
		log.Warn("work cgroup not removed", "cgroup", w.Path(), "err", err)
	}
}

// removeIdleWorkCgroup removes the work cgroup name below parent, and the
// work directory, if nothing runs in them.
func removeIdleWorkCgroup(log *slog.Logger, parent, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	p := resources.WorkCgroupPath(parent, name)
	for _, c := range []string{p, path.Dir(p)} {
		if removed, err := resources.RemoveIfUnused(ctx, c); err != nil || !removed {
			log.Info("work cgroup kept", "cgroup", c, "err", err)
			return
		}
	}
}
