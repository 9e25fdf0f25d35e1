package runner

import (
	"context"
	"fmt"
	"slices"

	"github.com/covedev/cove/internal/diskquota"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/mountinfo"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// Disk quotas. A class whose disk size the operator set (--class-disk, or
// a class's diskBytes in the runner's configuration) gives each of its
// environments a disk of that size: an ext4 image on a loop device
// (internal/diskquota), mounted at Layout.Disk while the environment runs,
// holding its workspace, overlay upper and work dirs, volumes and run
// dirs. A class without one (its size filled in by withDisk from the data
// dir's file system) gives none: its environments share the data dir's
// file system as before.
//
// The prepare step makes the disk (its size is recorded in the state's
// disk section, which it owns, before the image exists: a runner killed
// half-way finds the section and makes the disk again); the disk step
// mounts it on every start path; the unmount-disk step unmounts it when the
// environment stops (a stopped environment holds no loop device, mount or
// journal thread); the remove step unmounts and detaches it once more
// before deleting the directory, image included. An environment made
// before its runner had disk quotas (no disk section) keeps running
// without one: moving its data into an image is not done behind the
// user's back.

// diskState is the disk section, owned by the prepare step.
type diskState struct {
	// Bytes is the size of the environment's disk; 0: it has none.
	Bytes int64 `json:"bytes,omitempty"`
}

// diskQuotas are the disk sizes of the classes that set one, by class id.
type diskQuotas map[string]int64

// newDiskQuotas takes the classes whose disk size the operator set, before
// withDisk fills in the others, and checks that this host can enforce
// them: a runner that would silently not enforce a quota refuses to start.
func newDiskQuotas(cs []*covev1.EnvironmentClass, check func() error) (diskQuotas, error) {
	q := diskQuotas{}
	for _, c := range cs {
		if b := c.GetDiskBytes(); b > 0 {
			if b < diskquota.MinSize {
				return nil, usererr.New("class %q: disk size %d bytes is below the minimum of %d MiB", c.GetId(), b, diskquota.MinSize>>20)
			}
			q[c.GetId()] = b
		}
	}
	if len(q) == 0 {
		return q, nil
	}
	if err := check(); err != nil {
		return nil, usererr.Wrap(err, "class disk limits (--class-disk) cannot be enforced on this host: %v; give the runner loop devices and mkfs.ext4, or run without a class disk limit", err)
	}
	return q, nil
}

// withDiskLayout is lay with its data on the environment's disk when st
// says it has one.
func withDiskLayout(lay envdir.Layout, st *envState) envdir.Layout {
	if st != nil && st.Disk.Bytes > 0 {
		return lay.WithDisk()
	}
	return lay
}

// makeDisk records the disk of size in st, then makes and mounts it.
func makeDisk(ctx context.Context, e *stepEnv, size int64) error {
	e.st.Disk.Bytes = size
	e.lay = e.lay.WithDisk()
	if err := diskquota.Create(ctx, e.lay.DiskImage(), size); err != nil {
		return fmt.Errorf("make disk: %w", err)
	}
	return mountDisk(e)
}

func mountDisk(e *stepEnv) error {
	if err := diskquota.Mount(e.lay.DiskImage(), e.lay.Disk()); err != nil {
		return fmt.Errorf("mount disk: %w", err)
	}
	return nil
}

// diskStep mounts the environment's disk (every start path: after a stop,
// a runner restart or a crash).
type diskStep struct{}

func (diskStep) run(_ context.Context, e *stepEnv) error {
	e.lay = withDiskLayout(e.lay, e.st)
	if !e.lay.HasDisk() {
		return nil
	}
	return mountDisk(e)
}

// unmountDiskStep unmounts the environment's disk; its loop device goes
// with it. It owns no state.
type unmountDiskStep struct{ log logger }

func (u unmountDiskStep) run(_ context.Context, e *stepEnv) error { return unmountDisk(e.lay, u.log) }

// withDiskIO gives res's block IO limits, which are on the data dir's
// disk, to the environment's loop device too: the environment's IO
// reaches its disk through that device, submitted in its own context.
// Whether the loop device's own IO to the image file is charged to the
// environment on the data dir's disk depends on the kernel (since 5.12 the
// loop driver's per-cgroup workers do; e2e TestDiskQuota measured a
// direct-IO writer under the limit here with either); the limit on the
// loop device does not.
func withDiskIO(res runtime.Resources, lay envdir.Layout) runtime.Resources {
	if len(res.IO) == 0 || !lay.HasDisk() {
		return res
	}
	var st unix.Stat_t
	if err := unix.Stat(lay.Disk(), &st); err != nil || unix.Major(st.Dev) != 7 {
		return res
	}
	d := res.IO[0]
	d.Major, d.Minor = int64(unix.Major(st.Dev)), int64(unix.Minor(st.Dev))
	res.IO = append(slices.Clip(res.IO), d)
	return res
}

// logger is the part of slog.Logger the disk steps use.
type logger interface {
	Warn(msg string, args ...any)
}

// unmountDisk unmounts lay's disk, if mounted, and checks its loop device
// went. One still attached means the file system is still mounted in some
// other mount namespace (it detaches when that one lets go): logged, not
// an error, since nothing more can be done from here.
func unmountDisk(lay envdir.Layout, log logger) error {
	if err := unstageEnvironment(lay); err != nil { // staged binds hold the file system
		return err
	}
	if err := diskquota.Unmount(lay.Disk()); err != nil {
		return err
	}
	if err := diskquota.Detach(lay.DiskImage()); err != nil {
		log.Warn("disk unmounted but its loop device is still attached", "disk", lay.DiskImage(), "err", err)
	}
	return nil
}

// diskMounted reports whether lay's disk is mounted.
func diskMounted(lay envdir.Layout) bool {
	ok, _ := mountinfo.IsMountPoint(lay.Disk())
	return ok
}

// diskUsage is the used and total bytes of the disk of environment id, if
// it has one mounted.
func (r *Runner) diskUsage(id string) (used, size int64, ok bool) {
	lay := r.layout(id)
	if !diskMounted(lay) {
		return 0, 0, false
	}
	used, size, err := diskquota.Usage(lay.Disk())
	return used, size, err == nil
}

var (
	descDisk      = prometheus.NewDesc("cove_environment_disk_bytes", "Bytes used on the environment's disk (environments with a class disk limit only).", envLabel, nil)
	descDiskLimit = prometheus.NewDesc("cove_environment_disk_limit_bytes", "Size of the environment's disk (environments with a class disk limit only).", envLabel, nil)
)

// collectDisk adds environment id's disk use to a metrics scrape, if it
// has a disk mounted.
func collectDisk(ch chan<- prometheus.Metric, r *Runner, id string) {
	if used, size, ok := r.diskUsage(id); ok {
		ch <- prometheus.MustNewConstMetric(descDisk, prometheus.GaugeValue, float64(used), id)
		ch <- prometheus.MustNewConstMetric(descDiskLimit, prometheus.GaugeValue, float64(size), id)
	}
}

// sweepDisks detaches the loop devices of disk images a runner removed
// while they were still attached (killed while deleting an environment).
func (r *Runner) sweepDisks() {
	imgs, err := diskquota.DetachUnder(envdir.Root(r.cfg.DataDir))
	for _, img := range imgs {
		r.log.Warn("detached the loop device of a removed environment's disk", "disk", img)
	}
	if err != nil {
		r.log.Error("sweep disks", "err", err)
	}
}
