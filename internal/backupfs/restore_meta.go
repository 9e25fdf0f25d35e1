package backupfs

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/errdefs"
)

// tmpPrefix starts the name a file is written under until it is whole.
const tmpPrefix = ".cove-restore-"

// file writes a file under a temporary name, sets its metadata and renames
// it into place; a file that cannot be read whole from the backup is
// removed and listed.
func (r *restorer) file(e *backuprepo.Entry, t *target, pfd int, base string) error {
	var fd int
	var tmp string
	for {
		r.seq++
		tmp = fmt.Sprintf("%s%d", tmpPrefix, r.seq)
		if tmp == base {
			continue
		}
		var err error
		fd, err = unix.Openat(pfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue // a name the backup restored
		}
		if err != nil {
			return r.local(e.Path, fmt.Errorf("create: %w", err))
		}
		break
	}
	f := os.NewFile(uintptr(fd), e.Path)
	err := r.repo.ReadFile(r.ctx, e, &sparseWriter{f: f})
	if err == nil {
		if err = f.Truncate(e.Size); err != nil {
			err = fmt.Errorf("restore %q: %w", e.Path, err)
		}
	}
	local := false
	if err == nil {
		if err = r.meta(e, t, fd, -1, ""); err != nil {
			local = true
		}
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("restore %q: %w", e.Path, cerr)
	}
	if err == nil {
		if err = unix.Renameat2(pfd, tmp, pfd, base, unix.RENAME_NOREPLACE); err != nil {
			err, local = fmt.Errorf("rename into place: %w", err), true
		}
	}
	if err != nil {
		if uerr := unix.Unlinkat(pfd, tmp, 0); uerr != nil && !errors.Is(uerr, unix.ENOENT) {
			r.log.Warn("remove a file not restored", "path", e.Path, "err", uerr)
		}
		if local {
			return r.local(e.Path, err)
		}
		return r.content(e.Path, err)
	}
	r.res.Files++
	r.res.Bytes += e.Size
	r.progress.Files++
	r.progress.Bytes += e.Size
	r.report(false)
	return nil
}

// content handles an error restoring a file's content: a chunk missing,
// corrupt or refused lists the file; a full disk, a failing one, the
// store out of reach or a cancelled restore stops it.
func (r *restorer) content(p string, err error) error {
	switch {
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT), errors.Is(err, unix.EIO), errors.Is(err, unix.EROFS):
		return r.local(p, err)
	case r.ctx.Err() != nil:
		return r.ctx.Err()
	case backuprepo.IsCorrupt(err), errdefs.Is(err, errdefs.CategoryNotFound),
		errdefs.Is(err, errdefs.CategoryFailedPrecondition), errdefs.Is(err, errdefs.CategoryInvalidArgument):
		r.fail(p, err)
		return nil
	}
	return fmt.Errorf("restore stopped: %w", err)
}

// sparseWriter writes a file leaving holes where a chunk is all zeros (the
// caller truncates to the full size at the end).
type sparseWriter struct {
	f    *os.File
	off  int64
	zero []byte // the last slice found all zeros (ReadFile repeats a chunk's slice)
}

func (w *sparseWriter) Write(p []byte) (int, error) {
	if len(p) > 0 && len(w.zero) == len(p) && &w.zero[0] == &p[0] {
		w.off += int64(len(p))
		return len(p), nil
	}
	if allZero(p) {
		w.zero = p
	} else {
		if _, err := w.f.WriteAt(p, w.off); err != nil {
			return 0, err
		}
	}
	w.off += int64(len(p))
	return len(p), nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// meta sets an entry's owner, mode, extended attributes and (but for
// directories, done when left) times: through fd when it is >= 0, else on
// name base in directory pfd without following it. An error is of the
// target's file system (see local).
func (r *restorer) meta(e *backuprepo.Entry, t *target, fd, pfd int, base string) error {
	m := r.opts.Map
	uid, uok := m.host(e.UID, m.HostUID)
	gid, gok := m.host(e.GID, m.HostGID)
	if !uok || !gok {
		r.res.Overflow++
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

// setTimes sets access and modification times to mtime.
func setTimes(fd, pfd int, base string, mtime int64) error {
	ts := []unix.Timespec{unix.NsecToTimespec(mtime), unix.NsecToTimespec(mtime)}
	if fd >= 0 {
		return unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), ts, 0)
	}
	return unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
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
					r.res.Overflow++
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
