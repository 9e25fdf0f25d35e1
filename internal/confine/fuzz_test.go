package confine

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/covedev/cove/internal/testutil"
)

// Names and link targets the fuzzer combines: every way a tar entry has
// been used to escape an extraction directory (.., absolute paths, links
// then writes through them, hard links out, whiteouts of linked paths).
var (
	fuzzNames = []string{"a", "a/b", "a/b/c", "b", "link", "link/x", "link/", "x/", "..", "../secret", "./a",
		"a/../..", ".wh.a", "a/.wh..wh..opq", ".wh.link", "link/.wh.ssh_user_ca", "secret", "/abs", "a//b", "link/../x"}
	fuzzTargets = []string{"..", "../secret", "/", "a", "link", "../secret/ssh_user_ca", "a/b", "/proc/self/root",
		"../..", "link/ssh_user_ca", "secret/ssh_user_ca", "."}
	fuzzTypes = []byte{tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeFifo}
)

// fuzzTar turns fuzz input into a tar stream: 4 bytes an entry (type, name,
// link target, mode).
func fuzzTar(t testing.TB, data []byte) []byte {
	var hdrs []tar.Header
	for i := 0; i+4 <= len(data) && len(hdrs) < 32; i += 4 {
		h := tar.Header{
			Typeflag: fuzzTypes[int(data[i])%len(fuzzTypes)],
			Name:     fuzzNames[int(data[i+1])%len(fuzzNames)],
			Linkname: fuzzTargets[int(data[i+2])%len(fuzzTargets)],
			Mode:     int64(data[i+3]) * 0o17 & 0o7777,
			Uid:      int(data[i+3]),
		}
		hdrs = append(hdrs, h)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if h.Typeflag == tar.TypeReg {
			h.Size = 3
		}
		if tw.WriteHeader(&h) != nil {
			// archive/tar refuses some combinations (a file name with a
			// trailing slash): leave the stream as it is so far.
			break
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte("abc"))
		}
	}
	tw.Flush()
	return buf.Bytes()
}

// FuzzUnpack unpacks fuzzed tar streams, with the options of an image layer
// and of a feature archive, into a directory beside a "secret" one, and
// checks that nothing outside the directory was created, changed, linked
// or chmodded, whatever the stream held.
func FuzzUnpack(f *testing.F) {
	testutil.RequireRoot(f, "chown, mknod")
	enc := func(typ byte, name, target int, mode byte) []byte {
		return []byte{byte(bytes.IndexByte(fuzzTypes, typ)), byte(name), byte(target), mode}
	}
	seeds := [][]byte{
		// symlink then a directory entry through it (F4)
		append(enc(tar.TypeSymlink, 4, 1, 0), enc(tar.TypeDir, 4, 0, 0o77)...),
		// symlink then a file through it
		append(enc(tar.TypeSymlink, 4, 0, 0), enc(tar.TypeReg, 5, 0, 1)...),
		// hard link out of the tree, and through a symlink
		enc(tar.TypeLink, 0, 5, 0),
		append(enc(tar.TypeSymlink, 4, 1, 0), enc(tar.TypeLink, 0, 9, 0)...),
		// whiteout through a symlink
		append(enc(tar.TypeSymlink, 4, 1, 0), enc(tar.TypeReg, 15, 0, 0)...),
		// symlink to / then an opaque marker below it
		append(enc(tar.TypeSymlink, 0, 2, 0), enc(tar.TypeReg, 13, 0, 0)...),
		// dot-dot and absolute names
		append(enc(tar.TypeReg, 8, 0, 0), enc(tar.TypeReg, 17, 0, 0)...),
	}
	for _, s := range seeds {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, layer bool) {
		parent := t.TempDir()
		secret := filepath.Join(parent, "secret")
		if err := os.Mkdir(secret, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(secret, "ssh_user_ca"), []byte("HOST-SECRET-KEY"), 0o644); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(parent, "layer")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		opts := UnpackOptions{MaxBytes: 1 << 20}
		if layer {
			opts = UnpackOptions{Owners: true, Devices: true, Whiteouts: true, Xattrs: true}
		}
		d, err := OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		_ = Unpack(context.Background(), d, bytes.NewReader(fuzzTar(t, data)), opts)
		checkSentinel(t, parent)
	})
}
