package runner

import (
	"os"
	"path/filepath"

	"github.com/covedev/cove/internal/resources"
)

// The runtime's cgroup parent holds every environment's cgroup: it is
// capped at start and removed when the runner stops with no environments.

// cgroupParentRemover is a runtime whose environments' cgroups share a
// parent cgroup (the container runtime).
type cgroupParentRemover interface {
	RemoveCgroupParent() (bool, error)
}

// removeCgroupParent removes the runtime's cgroup parent when no
// environment is left on this runner (R3 of the 2026-12 review). With
// environments on disk it stays: they keep running, or start again, under
// it.
func (j *janitor) removeCgroupParent() {
	c, ok := j.rt.(cgroupParentRemover)
	if !ok {
		return
	}
	ents, err := os.ReadDir(filepath.Join(j.dataDir, "envs"))
	if err != nil || len(ents) > 0 {
		return
	}
	removed, err := c.RemoveCgroupParent()
	switch {
	case err != nil:
		j.log.Warn("cgroup parent not removed", "err", err)
	case removed:
		j.log.Info("no environments left: cgroup parent removed")
	default:
		j.log.Info("cgroup parent kept: something still runs below it")
	}
}

// cgroupParentLimiter is a runtime that can cap what all environments use
// together (the container runtime, by their parent cgroup).
type cgroupParentLimiter interface {
	LimitCgroupParent(memoryBytes int64) error
}

// limitEnvironmentsMemory caps the memory of all environments together at
// the host's memory less resources.HostReserve (R4 of the 2026-12 review):
// however many are busy, the kernel reclaims and OOM-kills inside
// environments before it touches the runner, its gateway and proxy.
func (j *janitor) limitEnvironmentsMemory() {
	l, ok := j.rt.(cgroupParentLimiter)
	host := memTotal()
	if !ok || host <= 0 {
		return
	}
	reserve := resources.HostReserve(host)
	if err := l.LimitCgroupParent(host - reserve); err != nil {
		j.log.Warn("environments' memory not capped as a whole", "err", err)
		return
	}
	j.log.Info("environments' memory capped as a whole", "bytes", host-reserve, "hostBytes", host, "reservedBytes", reserve)
}
