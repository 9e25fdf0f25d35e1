package backupfs

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
)

// meta sets an entry's owner, mode, extended attributes and (but for
// directories, done when left) times: through fd when it is >= 0, else on
// name base in directory pfd without following it. An error is of the
// target's file system (see local).
func (r *restorer) meta(e *backuprepo.Entry, t *target, fd, pfd int, base string) error {
	m := r.opts.Map
	uid, uok := m.host(e.UID, m.HostUID)
	gid, gok := m.host(e.GID, m.HostGID)
	if !uok || !gok {
		r.overflow.Add(1)
	}
	var err error
	if fd >= 0 {
		err = unix.Fchown(fd, int(uid), int(gid))
	} else {
		err = unix.Fchownat(pfd, base, int(uid), int(gid), unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return fmt.Errorf("set owner: %w", err)
	}
	switch {
	case fd >= 0:
		err = unix.Fchmod(fd, e.Mode)
	case e.Type == backuprepo.TypeWhiteout:
		err = unix.Fchmodat(pfd, base, e.Mode&0o777, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.EOPNOTSUPP) {
			// No fchmodat2 (before Linux 6.6): the name is the device
			// just made by mknodat, in a directory only this restore
			// writes.
			err = unix.Fchmodat(pfd, base, e.Mode&0o777, 0)
		}
	}
	if err != nil {
		return fmt.Errorf("set mode: %w", err)
	}
	r.xattrs(e, t, fd, pfd, base)
	if e.Type == backuprepo.TypeDir {
		return nil
	}
	if err := setTimes(fd, pfd, base, e.Mtime); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// setTimes sets access and modification times to mtime: of fd when it is
// >= 0 (futimens: utimensat with no path), else of name base in directory
// pfd without following it.
func setTimes(fd, pfd int, base string, mtime int64) error {
	ts := [2]unix.Timespec{unix.NsecToTimespec(mtime), unix.NsecToTimespec(mtime)}
	if fd >= 0 {
		_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
		if errno != 0 {
			return errno
		}
		return nil
	}
	return unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW)
}

// xattrs sets the entry's extended attributes (mapped into the new range)
// and the opaque marker. Only what a backup keeps (keptXattr) is written:
// a trusted.* attribute in a manifest (an overlay redirect, say) or a
// security label is never set. One that cannot be set is logged, the entry kept.
func (r *restorer) xattrs(e *backuprepo.Entry, t *target, fd, pfd int, base string) {
	m := r.opts.Map
	set := func(name string, v []byte) {
		var err error
		if fd >= 0 {
			err = unix.Fsetxattr(fd, name, v, 0)
		} else {
			err = unix.Lsetxattr(fmt.Sprintf("/proc/self/fd/%d/%s", pfd, base), name, v, 0)
		}
		if err != nil {
			r.log.Warn("extended attribute not restored", "path", e.Path, "name", name, "err", err)
		}
	}
	if e.Opaque {
		if t.Overlay {
			set(xattrOpaque, []byte("y"))
		} else {
			r.log.Warn("opaque directory outside an overlay upper directory: restored as a plain one", "path", e.Path)
		}
	}
	names := slices.Sorted(maps.Keys(e.Xattrs))
	// The capability last: setting an owner or another attribute must not
	// clear it.
	slices.SortStableFunc(names, func(a, b string) int {
		return boolInt(a == xattrCap) - boolInt(b == xattrCap)
	})
	for _, name := range names {
		v := e.Xattrs[name]
		switch {
		case name == xattrCap:
			mv, err := capToHost(v, m)
			if err != nil {
				r.log.Warn("file capability not restored", "path", e.Path, "err", err)
				continue
			}
			v = mv
		case name == xattrACL || name == xattrACLDef:
			mv, ok := mapACL(v, func(id uint32, group bool) uint32 {
				base := m.HostUID
				if group {
					base = m.HostGID
				}
				h, ok := m.host(id, base)
				if !ok {
					r.overflow.Add(1)
				}
				return h
			})
			if !ok {
				r.log.Warn("malformed ACL not restored", "path", e.Path, "name", name)
				continue
			}
			v = mv
		case keptXattr(name):
		default:
			r.log.Warn("extended attribute a backup does not hold: not restored", "path", e.Path, "name", name)
			continue
		}
		set(name, v)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
