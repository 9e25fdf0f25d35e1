package treecopy

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// copyXattrs copies the extended attributes of src that opts.Xattr accepts
// onto dst. A source file system without xattr support has none to copy.
func copyXattrs(src, dst string, opts Options) error {
	names, err := listXattrs(src)
	if err != nil {
		return err
	}
	for _, name := range names {
		if opts.Xattr != nil {
			keep, err := opts.Xattr(src, name)
			if err != nil {
				return err
			}
			if !keep {
				continue
			}
		}
		vsz, err := unix.Lgetxattr(src, name, nil)
		if err != nil {
			return fmt.Errorf("get xattr %s of %s: %w", name, src, err)
		}
		val := make([]byte, vsz)
		if vsz > 0 {
			if vsz, err = unix.Lgetxattr(src, name, val); err != nil {
				return fmt.Errorf("get xattr %s of %s: %w", name, src, err)
			}
		}
		if err := unix.Lsetxattr(dst, name, val[:vsz], 0); err != nil {
			if opts.TolerateXattrErrors && (errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM)) {
				continue
			}
			return fmt.Errorf("set xattr %s on %s: %w", name, dst, err)
		}
	}
	return nil
}

func listXattrs(path string) ([]string, error) {
	sz, err := unix.Llistxattr(path, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
	}
	if sz == 0 {
		return nil, nil
	}
	buf := make([]byte, sz)
	if sz, err = unix.Llistxattr(path, buf); err != nil {
		return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
	}
	return splitNul(buf[:sz]), nil
}

// splitNul splits a NUL-terminated list of names, skipping empty ones.
func splitNul(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	if start < len(b) {
		out = append(out, string(b[start:]))
	}
	return out
}
