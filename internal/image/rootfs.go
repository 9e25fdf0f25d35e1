package image

import (
	"errors"
	"path/filepath"

	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/mountinfo"
)

// Mounted reports whether a root file system is mounted at target (a
// RootfsConfig's Target): whether target is the root of a mount, bind and
// idmapped mounts of the same file system included. A missing target is
// not mounted; neither is a symlink (never followed).
func Mounted(target string) (bool, error) {
	return mountinfo.IsMountPoint(target)
}

// RootfsConfig describes an environment's root file system.
type RootfsConfig struct {
	Layers            []string    // from Image.Layers, bottom first
	UpperDir, WorkDir string      // per-environment, on local disk
	LowerDir          string      // per-environment dir for the layers' idmapped views; keep it short (e.g. <envdir>/l)
	Target            string      // where the overlay is mounted (the bundle rootfs)
	IDMap             idmap.Range // environment's uid/gid range

	// ShiftedDir caches chowned layer copies when idmapped mounts are not
	// supported. Default: "shifted" in the store holding the layers.
	ShiftedDir string

	noIDMap bool // tests: force the chowned-copy fallback
}

func (c RootfsConfig) validate() error {
	if len(c.Layers) == 0 {
		return errors.New("rootfs: no layers")
	}
	if c.UpperDir == "" || c.WorkDir == "" || c.LowerDir == "" || c.Target == "" {
		return errors.New("rootfs: upper, work, lower and target dirs are required")
	}
	if c.IDMap.Size == 0 {
		return errors.New("rootfs: empty id map")
	}
	return nil
}

func (c RootfsConfig) shiftedDir() string {
	if c.ShiftedDir != "" {
		return c.ShiftedDir
	}
	// <store>/layers/sha256/<hex> -> <store>/shifted
	return filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(c.Layers[0]))), "shifted")
}

// uniqueLayers drops all but the topmost occurrence of a repeated layer
// (commonly the empty layer of WORKDIR steps): overlayfs refuses a directory
// twice, and the topmost copy shadows everything the lower ones did.
func uniqueLayers(layers []string) []string {
	seen := map[string]bool{}
	var rev []string
	for i := len(layers) - 1; i >= 0; i-- {
		if !seen[layers[i]] {
			seen[layers[i]] = true
			rev = append(rev, layers[i])
		}
	}
	out := make([]string, len(rev))
	for i, l := range rev {
		out[len(rev)-1-i] = l
	}
	return out
}
