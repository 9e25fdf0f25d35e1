package features

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/covedev/cove/internal/confine"
	"golang.org/x/sys/unix"
)

// maxFeatureSize bounds what one feature may unpack to.
const maxFeatureSize = 1 << 30

// untar extracts a tar (gzip-compressed or not) of a feature directory into
// dir. Entries are confined to dir (confine.Unpack): absolute or ".." paths
// are rejected and nothing is written, chmodded or linked through a symlink.
// Ownership is not kept (features are copied into the container by Stage);
// permission bits are, minus set-id; devices and fifos are skipped.
func untar(ctx context.Context, r io.Reader, dir string) error {
	br := bufio.NewReader(r)
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		r = zr
	} else {
		r = br
	}
	d, err := confine.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return confine.Unpack(ctx, d, r, confine.UnpackOptions{MaxBytes: maxFeatureSize})
}

// dirDigest hashes a directory tree: every entry's relative path, type,
// permission bits, and content or symlink target, depth first in name
// order. The tree is read through confine.Walk: a link never leads out.
func dirDigest(ctx context.Context, dir *confine.Dir) (string, error) {
	h := sha256.New()
	var total int64
	err := confine.Walk(ctx, dir, func(e *confine.Entry) error {
		fmt.Fprintf(h, "%s\x00%o\x00", e.Rel, e.Stat.Mode&(unix.S_IFMT|0o777))
		switch e.Type() {
		case unix.S_IFREG:
			total += e.Stat.Size
			if total > maxFeatureSize {
				return fmt.Errorf("feature is larger than 1 GiB")
			}
			f, err := e.Open()
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%d\x00", e.Stat.Size)
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
		case unix.S_IFLNK:
			t, err := e.Readlink()
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%s", t)
		}
		h.Write([]byte{0})
		return nil
	}, nil)
	if err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// copyTree copies a feature directory (files, dirs, symlinks; no owners,
// no set-id bits, no devices) to dst, which must not exist.
func copyTree(ctx context.Context, src *confine.Dir, dst string) error {
	return confine.CopyTree(ctx, src, dst, confine.CopyOptions{
		NoOwners: true, Types: confine.Regular | confine.Directory | confine.Symlink,
	})
}
