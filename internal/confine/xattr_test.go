package confine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestEntryXattrBounded: Entry.Xattr reads a value only up to the bound
// the caller gives (E2BIG beyond it, so a hostile file's large values
// cost nothing), and an attribute removed since the listing is ENODATA;
// XattrNames lists without reading values.
func TestEntryXattrBounded(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	val := make([]byte, 100)
	if err := unix.Setxattr(p, "user.big", val, 0); err != nil {
		t.Skipf("user.* attributes not supported here: %v", err)
	}
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	seen := false
	err = Walk(context.Background(), d, func(e *Entry) error {
		if e.Rel != "f" {
			return nil
		}
		seen = true
		names, err := e.XattrNames()
		if err != nil || len(names) != 1 || names[0] != "user.big" {
			t.Errorf("XattrNames = %q, %v", names, err)
		}
		if v, err := e.Xattr("user.big", len(val)-1); !errors.Is(err, unix.E2BIG) || v != nil {
			t.Errorf("Xattr with a bound below the value's size = %d bytes, %v; want E2BIG", len(v), err)
		}
		if v, err := e.Xattr("user.big", len(val)); err != nil || len(v) != len(val) {
			t.Errorf("Xattr within the bound = %d bytes, %v", len(v), err)
		}
		if v, err := e.Xattr("user.absent", len(val)); !errors.Is(err, unix.ENODATA) {
			t.Errorf("Xattr of an absent attribute = %d bytes, %v; want ENODATA", len(v), err)
		}
		return nil
	}, nil)
	if err != nil || !seen {
		t.Fatalf("walk: %v (file seen: %v)", err, seen)
	}
}
