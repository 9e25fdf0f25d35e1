package confine

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// xattrTarget is a file whose extended attributes are read or written:
// through a descriptor (fd >= 0), else through a path whose last element
// is not followed.
type xattrTarget struct {
	fd   int
	path string
}

func (t xattrTarget) list() ([]string, error) {
	call := func(buf []byte) (int, error) {
		if t.fd >= 0 {
			return unix.Flistxattr(t.fd, buf)
		}
		return unix.Llistxattr(t.path, buf)
	}
	for range 8 {
		sz, err := call(nil)
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		if sz == 0 {
			return nil, nil
		}
		buf := make([]byte, sz)
		sz, err = call(buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew since
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		return splitNul(buf[:sz]), nil
	}
	return nil, fmt.Errorf("list xattrs: %w", unix.ERANGE)
}

func (t xattrTarget) get(name string) ([]byte, error) {
	return t.getMax(name, -1)
}

// getMax reads one value; with max >= 0 a value of more than max bytes is
// not read (unix.E2BIG), so a caller bounds what it allocates.
func (t xattrTarget) getMax(name string, max int) ([]byte, error) {
	call := func(buf []byte) (int, error) {
		if t.fd >= 0 {
			return unix.Fgetxattr(t.fd, name, buf)
		}
		return unix.Lgetxattr(t.path, name, buf)
	}
	for range 8 {
		sz, err := call(nil)
		if err != nil {
			return nil, fmt.Errorf("get xattr %s: %w", name, err)
		}
		if max >= 0 && sz > max {
			return nil, fmt.Errorf("get xattr %s: %d bytes, at most %d: %w", name, sz, max, unix.E2BIG)
		}
		buf := make([]byte, sz)
		if sz == 0 {
			return buf, nil
		}
		sz, err = call(buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get xattr %s: %w", name, err)
		}
		return buf[:sz], nil
	}
	return nil, fmt.Errorf("get xattr %s: %w", name, unix.ERANGE)
}

func (t xattrTarget) set(name string, val []byte) error {
	if t.fd >= 0 {
		return unix.Fsetxattr(t.fd, name, val, 0)
	}
	return unix.Lsetxattr(t.path, name, val, 0)
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
