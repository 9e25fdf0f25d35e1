package container

import (
	"context"
	"path"

	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/runtime"
)

// groupAnnotation records a container's group in its OCI spec, where runc
// state reports it back: Delete is only given the id.
const groupAnnotation = "dev.cove.group"

// groupCgroup is the cgroup of group, which carries the group's limits.
func (r *Runtime) groupCgroup(group string) string {
	return resources.CgroupPath(r.cfg.CgroupParent, group)
}

// cgroupPath is the cgroup of container id: below its group's cgroup if it
// has a group, else directly below the cgroup parent.
func (r *Runtime) cgroupPath(id, group string) string {
	if group == "" {
		return resources.CgroupPath(r.cfg.CgroupParent, id)
	}
	return path.Join(r.groupCgroup(group), id)
}

// lockGroup serialises the creation and removal of group's cgroup with the
// creation of its members' cgroups, so that a group's cgroup is never
// removed while a member is being created in it. Group locks are taken
// after container locks; "/" keeps their keys apart from container ids.
func (r *Runtime) lockGroup(group string) func() {
	return r.lock("group/" + group)
}

// limits are the limits spec's group cgroup carries.
func limits(res runtime.Resources) resources.Limits {
	l := resources.Limits{CPUMillis: res.CPUMillis, MemoryBytes: res.MemoryBytes, Pids: res.Pids,
		MemoryHighBytes: res.MemoryHighBytes, SwapBytes: res.SwapBytes}
	if res.SwapBytes == runtime.NoSwap {
		l.SwapBytes = resources.NoSwap
	}
	for _, d := range res.IO {
		l.IO = append(l.IO, resources.DeviceIO{Major: d.Major, Minor: d.Minor,
			ReadBPS: d.ReadBPS, WriteBPS: d.WriteBPS, ReadIOPS: d.ReadIOPS, WriteIOPS: d.WriteIOPS})
	}
	return l
}

// prepareCgroup gets the cgroup of a container about to be created ready:
// a cgroup left behind by a crashed create (it would hold stale limits) is
// removed, and the group's cgroup is created with the group's limits. The
// caller holds the group's lock if spec has a group.
func (r *Runtime) prepareCgroup(ctx context.Context, spec runtime.Spec) error {
	if cg := r.cgroupPath(spec.ID, spec.Group); resources.Exists(cg) {
		if err := r.removeCgroup(ctx, cg); err != nil {
			return err
		}
	}
	if spec.Group == "" {
		return nil
	}
	return resources.Create(r.groupCgroup(spec.Group), limits(spec.Resources))
}

// removeCgroups removes the cgroup of container id and, if it was the last
// member of its group, the group's cgroup.
func (r *Runtime) removeCgroups(ctx context.Context, id, group string) error {
	if group != "" {
		defer r.lockGroup(group)()
	}
	if cg := r.cgroupPath(id, group); resources.Exists(cg) {
		if err := r.removeCgroup(ctx, cg); err != nil {
			return err
		}
	}
	if group == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, cgroupTimeout)
	defer cancel()
	removed, err := resources.RemoveIfUnused(ctx, r.groupCgroup(group))
	if err != nil {
		return err
	}
	if !removed {
		r.log.DebugContext(ctx, "group cgroup kept for its other members", "id", id, "group", group)
	}
	return nil
}
