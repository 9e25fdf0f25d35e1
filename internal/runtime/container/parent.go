package container

import "github.com/covedev/cove/internal/resources"

// LimitCgroupParent caps the memory of the cgroup parent
// (Config.CgroupParent), which every environment's cgroup is below: all
// environments together can use no more than memoryBytes. It creates the
// parent if needed and may be called again to change the cap.
func (r *Runtime) LimitCgroupParent(memoryBytes int64) error {
	return resources.Create(resources.CgroupPath(r.cfg.CgroupParent, ""), resources.Limits{MemoryBytes: memoryBytes})
}

// RemoveCgroupParent removes the cgroup parent from every cgroup
// hierarchy, unless a container's cgroup or any process is still below it;
// it reports whether the parent is gone. The runner calls it when it stops
// with no environments left.
func (r *Runtime) RemoveCgroupParent() (bool, error) {
	return resources.RemoveParent(r.cfg.CgroupParent)
}
