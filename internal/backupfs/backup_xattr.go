package backupfs

import (
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/confine"
	"golang.org/x/sys/unix"
)

// readXattr reads one attribute's value of at most max bytes (a test
// injects errors here).
var readXattr = func(ce *confine.Entry, name string, max int) ([]byte, error) {
	return ce.Xattr(name, max)
}

// listXattrs lists an entry's attribute names (a test removes the entry
// first).
var listXattrs = func(ce *confine.Entry) ([]string, error) { return ce.XattrNames() }

// xattrs reads the entry's attributes into e: the kept ones (mapped), the
// opaque flag; whiteout reports an overlay "xattr whiteout". Names are
// filtered before any value is read, and reading stops at what a backup
// keeps (backuprepo.MaxXattrs, MaxXattrsTotal), so a file with thousands of
// large attributes costs no more than that. An attribute that cannot be
// read as listed (removed since: ENODATA; growing: ERANGE; too large:
// E2BIG) is left out and the file listed; the backup goes on.
func (b *backuper) xattrs(ce *confine.Entry, e *backuprepo.Entry) (whiteout bool, err error) {
	names, err := listXattrs(ce)
	if err != nil {
		if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ERANGE) {
			b.skip(e.Path, "extended attributes beyond what a backup keeps (64, 256 KiB)")
			return false, nil
		}
		return false, err
	}
	if len(names) == 0 {
		return false, nil
	}
	slices.Sort(names)
	all := map[string][]byte{}
	total, over := 0, false
	for _, name := range names {
		limit := 1 // the overlay markers' values are "y"
		switch {
		case name == "trusted.overlay.redirect" || name == "trusted.overlay.metacopy":
			b.skip(e.Path, "overlay "+strings.TrimPrefix(name, "trusted.overlay.")+" not kept")
			continue
		case name == xattrOpaque || name == xattrWhiteout:
		case !keptXattr(name) || over:
			continue
		case len(all) >= backuprepo.MaxXattrs || total+len(name) > backuprepo.MaxXattrsTotal:
			over = true
			continue
		default:
			limit = min(backuprepo.MaxXattrSize, backuprepo.MaxXattrsTotal-total-len(name))
		}
		v, err := readXattr(ce, name, limit)
		switch {
		case err == nil:
		case errors.Is(err, unix.E2BIG) && limit == 1: // not an overlay marker's value
			continue
		case errors.Is(err, unix.E2BIG):
			over = true
			continue
		case errors.Is(err, unix.ENODATA):
			b.skip(e.Path, "extended attribute "+name+" removed while being read")
			continue
		case errors.Is(err, unix.ERANGE):
			b.skip(e.Path, "extended attribute "+name+" changing while being read")
			continue
		default:
			return false, err
		}
		if name != xattrOpaque && name != xattrWhiteout {
			total += len(name) + len(v)
		}
		all[name] = v
	}
	if over {
		// As before the limits were checked while reading: none kept
		// rather than an arbitrary part of them.
		b.skip(e.Path, "extended attributes beyond what a backup keeps (64, 256 KiB)")
		for name := range all {
			if name != xattrOpaque && name != xattrWhiteout {
				delete(all, name)
			}
		}
	}
	m := b.opts.Map
	for _, name := range slices.Sorted(maps.Keys(all)) {
		v := all[name]
		switch {
		case name == xattrOpaque:
			if b.src.Overlay && e.Type == backuprepo.TypeDir && string(v) == "y" {
				e.Opaque = true
			}
			continue
		case name == xattrWhiteout:
			if b.src.Overlay && e.Type == backuprepo.TypeFile {
				whiteout = true
			}
			continue
		case name == xattrCap:
			mv, ok := capToInside(v, m)
			if !ok {
				b.res.Overflow++
				b.skip(e.Path, "file capability of another user namespace not kept")
				continue
			}
			v = mv
		case name == xattrACL || name == xattrACLDef:
			mv, ok := mapACL(v, func(id uint32, group bool) uint32 {
				base := m.HostUID
				if group {
					base = m.HostGID
				}
				in, ok := m.inside(id, base)
				if !ok {
					b.res.Overflow++
				}
				return in
			})
			if !ok {
				b.skip(e.Path, "malformed "+name+" not kept")
				continue
			}
			v = mv
		}
		if e.Xattrs == nil {
			e.Xattrs = map[string][]byte{}
		}
		e.Xattrs[name] = v
	}
	if e.Xattrs != nil {
		probe := backuprepo.Entry{Path: e.Path, Type: backuprepo.TypeDir, Xattrs: e.Xattrs}
		if err := probe.Validate(); err != nil {
			b.skip(e.Path, "extended attributes beyond what a backup keeps (64, 256 KiB)")
			e.Xattrs = nil
		}
	}
	return whiteout, nil
}
