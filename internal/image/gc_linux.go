package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Keep is what CollectGarbage must leave in place: everything an
// environment on disk still uses.
type Keep struct {
	// Manifests are the manifest digests ("sha256:<hex>") of images in
	// use. Their configs and layers are kept too.
	Manifests map[string]bool
	// Layers are the base names of layer directories in use (an unpacked
	// layer's is its diff id's hex), whatever the manifests say.
	Layers map[string]bool
	// Shifted maps the name of a uid range's directory under shifted/
	// ("<hostid>-<size>") to the base names of the layer copies in use in
	// that range. A range that is not a key is allocated to nobody: all
	// its copies are garbage.
	Shifted map[string]map[string]bool
}

// hexName is what the store names blobs and layers by.
var hexName = regexp.MustCompile(`^[0-9a-f]{64}$`)

// CollectGarbage hands discard every item of the store that keep does not
// name and that was last changed before cutoff: manifests and configs
// (blobs/), unpacked layers (layers/), chowned layer copies (shifted/),
// unfinished work (tmp/, interrupted writes), and drops index entries whose
// manifest is gone. Items changed after cutoff are always left alone: work
// in progress that nothing records yet.
//
// discard must take the path away at once (rename it into a trash
// directory on the same file system, say); removing the contents can wait.
// The caller must keep Pull, Import and MountRootfs from running on this
// store meanwhile, and must compute keep under that exclusion.
func (s *Store) CollectGarbage(ctx context.Context, keep Keep, cutoff time.Time, discard func(path string) error) error {
	keepBlobs := map[string]bool{}
	keepLayers := map[string]bool{}
	for l := range keep.Layers {
		keepLayers[l] = true
	}
	for m := range keep.Manifests {
		h, err := v1.NewHash(m)
		if err != nil || h.Algorithm != "sha256" || !hexName.MatchString(h.Hex) {
			continue
		}
		keepBlobs[h.Hex] = true
		raw, err := s.readBlob(h)
		if err != nil {
			continue // gone already; nothing of it to keep
		}
		mf, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			continue
		}
		keepBlobs[mf.Config.Digest.Hex] = true
		rawCfg, err := s.readBlob(mf.Config.Digest)
		if err != nil {
			continue
		}
		cfg, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
		if err != nil {
			continue
		}
		for _, d := range cfg.RootFS.DiffIDs {
			keepLayers[d.Hex] = true
		}
	}
	old := func(fi fs.FileInfo) bool { return changedAt(fi).Before(cutoff) }
	sweep := func(dir string, keep func(name string) bool) error {
		ents, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return err
			}
			if keep(e.Name()) {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if !old(fi) {
				continue
			}
			if err := discard(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
		return nil
	}
	if err := sweep(filepath.Join(s.root, "blobs", "sha256"), func(n string) bool { return keepBlobs[n] }); err != nil {
		return fmt.Errorf("image gc: blobs: %w", err)
	}
	if err := s.pruneIndex(); err != nil {
		return fmt.Errorf("image gc: %w", err)
	}
	if err := sweep(filepath.Join(s.root, "layers", "sha256"), func(n string) bool { return keepLayers[n] }); err != nil {
		return fmt.Errorf("image gc: layers: %w", err)
	}
	shifted := filepath.Join(s.root, "shifted")
	ranges, err := os.ReadDir(shifted)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("image gc: shifted: %w", err)
	}
	for _, rg := range ranges {
		inUse, allocated := keep.Shifted[rg.Name()]
		if !rg.IsDir() {
			continue
		}
		dir := filepath.Join(shifted, rg.Name())
		if err := sweep(dir, func(n string) bool { return inUse[n] }); err != nil {
			return fmt.Errorf("image gc: shifted: %w", err)
		}
		if !allocated {
			// Fails, and the directory stays, if a copy in it was too
			// new to go.
			_ = os.Remove(dir)
		}
	}
	if err := sweep(filepath.Join(s.root, "tmp"), func(string) bool { return false }); err != nil {
		return fmt.Errorf("image gc: tmp: %w", err)
	}
	// Interrupted atomic writes of the index.
	if err := sweep(s.root, func(n string) bool { return !isTempName(n, "index.json") }); err != nil {
		return fmt.Errorf("image gc: %w", err)
	}
	return nil
}

// isTempName reports whether n is an atomicfile temporary of base.
func isTempName(n, base string) bool {
	p := "." + base + ".tmp-"
	return len(n) > len(p) && n[:len(p)] == p
}

// pruneIndex drops the index entries whose manifest is not in the store.
func (s *Store) pruneIndex() error {
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	changed := false
	for name, dgst := range idx {
		if h, err := v1.NewHash(dgst); err == nil {
			_, err := os.Lstat(s.blobPath(h))
			if err == nil {
				continue
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("index entry %s: %w", name, err)
			}
		}
		delete(idx, name)
		changed = true
	}
	if !changed {
		return nil
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	if err := s.writeFileAtomic(filepath.Join(s.root, "index.json"), b); err != nil {
		return fmt.Errorf("write image index: %w", err)
	}
	return nil
}

// changedAt is when fi's inode last changed: the later of its modification
// time, which unpacks and copies set from archives and environments, and
// its status change time, which only the kernel sets (creation, rename,
// chmod).
func changedAt(fi fs.FileInfo) time.Time {
	t := fi.ModTime()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if c := time.Unix(st.Ctim.Unix()); c.After(t) {
			t = c
		}
	}
	return t
}
