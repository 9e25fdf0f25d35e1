package features

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// maxFeatureSize bounds what one feature may unpack to.
const maxFeatureSize = 1 << 30

// untar extracts a tar (gzip-compressed or not) of a feature directory into
// dir. Entries are confined to dir: absolute or ".." paths are rejected and
// nothing is written through a symlink. Ownership is not kept (features are
// copied into the container by Stage); permission bits are, minus set-id.
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
	tr := tar.NewReader(r)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		rel := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		if rel == "." || rel == "/" {
			continue
		}
		if path.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, "../") {
			return fmt.Errorf("entry %q escapes the feature directory", hdr.Name)
		}
		if err := noSymlinkParents(dir, rel); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		mode := os.FileMode(hdr.Mode) & os.ModePerm
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(dst, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			total += hdr.Size
			if total > maxFeatureSize {
				return errors.New("feature is larger than 1 GiB")
			}
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			if err := writeFile(dst, tr, mode); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			_ = os.Remove(dst)
			if err := os.Symlink(hdr.Linkname, dst); err != nil {
				return err
			}
		case tar.TypeLink:
			src := path.Clean(hdr.Linkname)
			if path.IsAbs(src) || src == ".." || strings.HasPrefix(src, "../") {
				return fmt.Errorf("hard link %q escapes the feature directory", hdr.Name)
			}
			if err := noSymlinkParents(dir, src); err != nil {
				return err
			}
			if err := os.Link(filepath.Join(dir, filepath.FromSlash(src)), dst); err != nil {
				return err
			}
		default:
			// Devices, fifos and the like have no place in a feature.
		}
	}
}

func writeFile(dst string, r io.Reader, mode os.FileMode) error {
	_ = os.Remove(dst)
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// noSymlinkParents fails if a directory on the way to rel inside dir is a
// symlink, so that writing rel cannot land outside dir.
func noSymlinkParents(dir, rel string) error {
	parts := strings.Split(path.Dir(rel), "/")
	cur := dir
	for _, p := range parts {
		if p == "." || p == "" {
			continue
		}
		cur = filepath.Join(cur, p)
		fi, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return errors.New("path goes through a symlink")
		}
	}
	return nil
}

// dirDigest hashes a directory tree: every entry's relative path, type,
// permission bits, and content or symlink target, in lexical order.
func dirDigest(ctx context.Context, dir string) (string, error) {
	h := sha256.New()
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(paths)
	for _, p := range paths {
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%o\x00", filepath.ToSlash(rel), fi.Mode()&(fs.ModeType|fs.ModePerm))
		switch {
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "%d\x00", fi.Size())
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return "", err
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "%s", t)
		}
		h.Write([]byte{0})
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// copyTree copies a feature directory (files, dirs, symlinks) to dst, which
// must not exist.
func copyTree(ctx context.Context, src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			return os.Chmod(out, fi.Mode().Perm()|0o700)
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			return writeFile(out, f, fi.Mode().Perm())
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(t, out)
		}
		return nil // sockets, devices: not part of a feature
	})
}
