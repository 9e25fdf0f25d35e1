package image

import (
	"context"
	"io"

	"github.com/covedev/cove/internal/confine"
)

// errEscape marks a layer entry that would write outside the layer directory.
var errEscape = confine.ErrEscape

// maxLayerSize bounds what one layer may unpack to (its files' sizes, holes
// of sparse files included, which cost no disk but take time to read).
const maxLayerSize = 128 << 30

// opaqueXattr marks an overlayfs opaque directory.
const opaqueXattr = "trusted.overlay.opaque"

// unpack extracts the tar stream r into dir, which must exist and be empty,
// turning OCI whiteouts into overlayfs ones. Ownership, devices and xattrs
// are kept as recorded. Every path is resolved beneath dir without
// following symlinks (confine.Unpack), so an entry can neither name a path
// outside dir nor write through a symlink.
func unpack(ctx context.Context, dir string, r io.Reader) error {
	d, err := confine.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return confine.Unpack(ctx, d, r, confine.UnpackOptions{Whiteouts: true, Owners: true, Devices: true, Xattrs: true, MaxBytes: maxLayerSize})
}
