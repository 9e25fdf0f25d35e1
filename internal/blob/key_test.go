package blob_test

import (
	"path"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/blobtest"
	"github.com/covedev/cove/internal/errdefs"
)

func TestValidateKey(t *testing.T) {
	for _, key := range []string{"a", "chunks/ab/abcdef0123", "manifests/env-1/2026-12-03T18.00.00Z", "A_b-c.d", "0", strings.Repeat("k", 200)} {
		if err := blob.ValidateKey(key); err != nil {
			t.Errorf("ValidateKey(%q) = %v", key, err)
		}
	}
	for _, key := range blobtest.BadKeys {
		err := blob.ValidateKey(key)
		if !errdefs.Is(err, errdefs.CategoryInvalidArgument) || errdefs.Retryable(err) {
			t.Errorf("ValidateKey(%q) = %v; want invalid argument", key, err)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	for _, p := range []string{"", "a", "a/", "chunks/ab", "chunks/", "a/b/c"} {
		if err := blob.ValidatePrefix(p); err != nil {
			t.Errorf("ValidatePrefix(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"/", "/a", "a//", "../", "a/../", ".tmp/", "a b", strings.Repeat("p", blob.MaxKeyLen+1)} {
		if err := blob.ValidatePrefix(p); !errdefs.Is(err, errdefs.CategoryInvalidArgument) {
			t.Errorf("ValidatePrefix(%q) = %v; want invalid argument", p, err)
		}
	}
}

// FuzzValidateKey: a key that passes is a clean relative path below its
// root, of printable ASCII, that no local store can turn into an escape.
func FuzzValidateKey(f *testing.F) {
	for _, k := range append([]string{"a/b", "chunks/00/ff", "x.y-z_0"}, blobtest.BadKeys...) {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if blob.ValidateKey(key) != nil {
			return
		}
		if path.Clean(key) != key || path.IsAbs(key) || key == "." || strings.HasPrefix(key, "..") {
			t.Fatalf("accepted %q, which is not a clean relative path", key)
		}
		for _, seg := range strings.Split(key, "/") {
			if seg == "" || seg[0] == '.' || seg == ".." {
				t.Fatalf("accepted %q with segment %q", key, seg)
			}
		}
		for i := 0; i < len(key); i++ {
			if key[i] < 0x21 || key[i] > 0x7e || key[i] == '\\' {
				t.Fatalf("accepted %q with byte %#x", key, key[i])
			}
		}
		if len(key) > blob.MaxKeyLen {
			t.Fatalf("accepted a key of %d bytes", len(key))
		}
	})
}
