// Package idmap describes the host uid/gid range an environment's user
// namespace maps to.
package idmap

import "fmt"

// Range maps ids [0, Size) inside an environment to host ids
// [HostID, HostID+Size). The same range is used for uids and gids.
type Range struct {
	HostID uint32 `json:"hostID"`
	Size   uint32 `json:"size"`
}

// ToHost returns the host id for id inside the environment.
func (r Range) ToHost(id uint32) uint32 { return r.HostID + id }

// Contains reports whether host id h belongs to the range.
func (r Range) Contains(h uint32) bool { return h >= r.HostID && h-r.HostID < r.Size }

func (r Range) String() string { return fmt.Sprintf("%d-%d", r.HostID, r.HostID+r.Size-1) }
