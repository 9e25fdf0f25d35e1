package backupfs

import (
	"maps"
	"slices"
	"strings"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/confine"
)

// xattrs reads the entry's attributes into e: the kept ones (mapped), the
// opaque flag; whiteout reports an overlay "xattr whiteout".
func (b *backuper) xattrs(ce *confine.Entry, e *backuprepo.Entry) (whiteout bool, err error) {
	all, err := ce.Xattrs()
	if err != nil || len(all) == 0 {
		return false, err
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
		case name == "trusted.overlay.redirect" || name == "trusted.overlay.metacopy":
			b.skip(e.Path, "overlay "+strings.TrimPrefix(name, "trusted.overlay.")+" not kept")
			continue
		case !keptXattr(name):
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
