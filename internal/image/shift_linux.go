package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/idmap"
)

// overflowID is the id unmapped ids show as (the kernel's overflowuid).
const overflowID = 65534

// shiftedLayer returns a copy of layer whose ids are shifted into r, making it
// under cacheDir/<range>/ if it does not exist yet (committed by rename).
func shiftedLayer(ctx context.Context, layer string, r idmap.Range, cacheDir string) (string, error) {
	dir := filepath.Join(cacheDir, fmt.Sprintf("%d-%d", r.HostID, r.Size))
	dst := filepath.Join(dir, filepath.Base(layer))
	if _, err := os.Lstat(dst); err == nil {
		return dst, nil
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", err
	}
	// A range belongs to one environment at a time: no concurrent copier.
	tmp := dst + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := copyShifted(ctx, layer, tmp, r); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("shift layer %s: %w", layer, err)
	}
	if err := syncDir(tmp); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	return dst, nil
}

func shiftID(id uint32, r idmap.Range) uint32 {
	if id >= r.Size {
		return overflowID // unmapped inside, and nobody's outside
	}
	return r.HostID + id
}

// copyShifted copies the tree src to dst (which must not exist) keeping
// modes, times, xattrs, devices and hard links, with ids shifted into r.
// Xattrs the destination refuses (trusted.* without privilege) are skipped.
func copyShifted(ctx context.Context, src, dst string, r idmap.Range) error {
	d, err := confine.OpenDir(src)
	if err != nil {
		return err
	}
	defer d.Close()
	return confine.CopyTree(ctx, d, dst, confine.CopyOptions{
		MapID:               func(id uint32) uint32 { return shiftID(id, r) },
		TolerateXattrErrors: true,
	})
}
