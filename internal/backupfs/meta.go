package backupfs

import (
	"encoding/binary"
	"fmt"
	"path"
	"strings"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/errdefs"
)

// validate checks the map: a range that fits in 32 bits.
func (m IDMap) validate() error {
	if m.Size == 0 || uint64(m.HostUID)+uint64(m.Size) > 1<<32 || uint64(m.HostGID)+uint64(m.Size) > 1<<32 {
		return errdefs.InvalidArgument(fmt.Errorf("id map %d/%d size %d: not a range of 32-bit ids", m.HostUID, m.HostGID, m.Size))
	}
	return nil
}

// inside maps host id h of a range starting at base to its inside id.
func (m IDMap) inside(h, base uint32) (uint32, bool) {
	if h >= base && h-base < m.Size {
		return h - base, true
	}
	return OverflowID, false
}

// host maps inside id i to the host id of a range starting at base (see
// IDMap for ids at or above Size).
func (m IDMap) host(i, base uint32) (uint32, bool) {
	if i < m.Size {
		return base + i, true
	}
	if OverflowID < m.Size {
		return base + OverflowID, false
	}
	return OverflowID, false
}

// Overlay and capability attributes.
const (
	xattrOpaque   = "trusted.overlay.opaque"
	xattrWhiteout = "trusted.overlay.whiteout"
	xattrCap      = "security.capability"
	xattrACL      = "system.posix_acl_access"
	xattrACLDef   = "system.posix_acl_default"
)

// keptXattr reports whether attribute name is stored and restored (after
// mapping, for capabilities and ACLs): user.*, the file capability and
// POSIX ACLs, what an environment can set. trusted.* is host-only:
// overlay markers become manifest semantics, the rest is not stored. The
// other security.* attributes (SELinux, SMACK, IMA, EVM) are the host's
// policy, which an environment cannot set either: they are not stored, and
// a manifest never chooses a host security label.
func keptXattr(name string) bool {
	return strings.HasPrefix(name, "user.") || name == xattrCap || name == xattrACL || name == xattrACLDef
}

// vfs_cap_data (linux/capability.h): magic_etc, then permitted and
// inheritable words, and for revision 3 the rootid, a uid of the user
// namespace that owns the file's view (a host uid as root sees it).
const (
	capRevMask = 0xFF000000
	capRev1    = 0x01000000
	capRev2    = 0x02000000
	capRev3    = 0x03000000
	capV1Size  = 4 + 2*4
	capV2Size  = 4 + 4*4
	capV3Size  = capV2Size + 4
)

// capToInside maps a capability read from the host: a v3's rootid becomes
// the inside uid. ok is false for a malformed value or a rootid outside
// the map (a capability of another namespace): it is not stored.
func capToInside(v []byte, m IDMap) ([]byte, bool) {
	if len(v) < 4 {
		return nil, false
	}
	switch rev := binary.LittleEndian.Uint32(v) & capRevMask; {
	case rev == capRev1 && len(v) == capV1Size, rev == capRev2 && len(v) == capV2Size:
		return v, true
	case rev == capRev3 && len(v) == capV3Size:
		in, ok := m.inside(binary.LittleEndian.Uint32(v[capV2Size:]), m.HostUID)
		if !ok {
			return nil, false
		}
		out := append([]byte(nil), v...)
		binary.LittleEndian.PutUint32(out[capV2Size:], in)
		return out, true
	}
	return nil, false
}

// capToHost maps a stored capability into the new range: always a v3
// whose rootid is the environment's root (or the stored inside rootid), so
// a restore never writes a capability valid outside the environment's
// namespace (a v1 or v2 one would be).
func capToHost(v []byte, m IDMap) ([]byte, error) {
	if len(v) < 4 {
		return nil, fmt.Errorf("capability of %d bytes", len(v))
	}
	magic := binary.LittleEndian.Uint32(v)
	out := make([]byte, capV3Size)
	binary.LittleEndian.PutUint32(out, capRev3|magic&^capRevMask)
	root := uint32(0)
	switch rev := magic & capRevMask; {
	case rev == capRev1 && len(v) == capV1Size:
		copy(out[4:], v[4:])
	case rev == capRev2 && len(v) == capV2Size:
		copy(out[4:], v[4:])
	case rev == capRev3 && len(v) == capV3Size:
		copy(out[4:], v[4:capV2Size])
		root = binary.LittleEndian.Uint32(v[capV2Size:])
		if root >= m.Size {
			return nil, fmt.Errorf("capability for uid %d, outside the environment's range", root)
		}
	default:
		return nil, fmt.Errorf("capability revision %#x of %d bytes", rev>>24, len(v))
	}
	binary.LittleEndian.PutUint32(out[capV2Size:], m.HostUID+root)
	return out, nil
}

// POSIX ACL attributes (linux/posix_acl_xattr.h): a version word, then
// entries of tag, permissions and id; named users and groups carry an id.
const (
	aclVersion = 2
	aclUser    = 0x02
	aclGroup   = 0x08
)

// mapACL rewrites the ids of an ACL value with f (uid or gid by tag); ok
// is false for a malformed value.
func mapACL(v []byte, f func(id uint32, group bool) uint32) ([]byte, bool) {
	if len(v) < 4 || (len(v)-4)%8 != 0 || binary.LittleEndian.Uint32(v) != aclVersion {
		return nil, false
	}
	out := append([]byte(nil), v...)
	for i := 4; i < len(out); i += 8 {
		switch binary.LittleEndian.Uint16(out[i:]) {
		case aclUser:
			binary.LittleEndian.PutUint32(out[i+4:], f(binary.LittleEndian.Uint32(out[i+4:]), false))
		case aclGroup:
			binary.LittleEndian.PutUint32(out[i+4:], f(binary.LittleEndian.Uint32(out[i+4:]), true))
		}
	}
	return out, true
}

// validName checks a source or target name: a clean relative path.
func validName(name string) error {
	if err := backuprepo.ValidPath(name); err != nil {
		return errdefs.InvalidArgument(fmt.Errorf("tree name %q: %w", name, err))
	}
	return nil
}

// checkNames validates names and refuses duplicates and nesting.
func checkNames(names []string) error {
	for i, a := range names {
		if err := validName(a); err != nil {
			return err
		}
		for _, b := range names[:i] {
			if a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/") {
				return errdefs.InvalidArgument(fmt.Errorf("trees %q and %q overlap", b, a))
			}
		}
	}
	return nil
}

// within reports whether p is name or below it.
func within(p, name string) bool {
	return p == name || strings.HasPrefix(p, name+"/")
}

// parentOf is the parent of a backup path ("." for a top-level name).
func parentOf(p string) string { return path.Dir(p) }
