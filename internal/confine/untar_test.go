package confine

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func tarOf(t testing.TB, hdrs ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		body := ""
		if h.Typeflag == tar.TypeReg {
			body = "content of " + h.Name
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if body != "" {
			tw.Write([]byte(body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestUnpackChmodThroughSymlink is the F4 reproduction: a feature tarball
// with a symlink x -> <host dir> and then a directory entry x/ with mode
// 0777. The host directory's mode must not change; x becomes a directory.
func TestUnpackChmodThroughSymlink(t *testing.T) {
	requireRoot(t)
	host := secretDir(t)
	before := lstat(t, host).Mode
	dir := t.TempDir()
	data := tarOf(t,
		tar.Header{Name: "devcontainer-feature.json", Typeflag: tar.TypeReg, Mode: 0o644},
		tar.Header{Name: "x", Typeflag: tar.TypeSymlink, Linkname: host},
		tar.Header{Name: "x/", Typeflag: tar.TypeDir, Mode: 0o777},
	)
	for _, opts := range []UnpackOptions{{}, {Owners: true, Devices: true, Whiteouts: true, Xattrs: true}} {
		d := filepath.Join(dir, "out")
		os.RemoveAll(d)
		os.Mkdir(d, 0o755)
		err := Unpack(context.Background(), openDir(t, d), bytes.NewReader(data), opts)
		if got := lstat(t, host).Mode; got != before {
			t.Fatalf("host dir mode %o -> %o (err %v)", before, got, err)
		}
		if err == nil {
			if st := lstat(t, filepath.Join(d, "x")); st.Mode&unix.S_IFMT != unix.S_IFDIR {
				t.Errorf("x is mode %o, want a directory", st.Mode)
			}
		}
	}
}

func TestUnpackConfined(t *testing.T) {
	requireRoot(t)
	for name, hdrs := range map[string][]tar.Header{
		"dotdot":   {{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644}},
		"absolute": {{Name: "/evil", Typeflag: tar.TypeReg, Mode: 0o644}},
		"through symlink": {
			{Name: "link", Typeflag: tar.TypeSymlink, Linkname: ".."},
			{Name: "link/evil", Typeflag: tar.TypeReg, Mode: 0o644},
		},
		"hardlink out": {{Name: "h", Typeflag: tar.TypeLink, Linkname: "../secret/ssh_user_ca"}},
		"hardlink through symlink": {
			{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "../secret"},
			{Name: "h", Typeflag: tar.TypeLink, Linkname: "link/ssh_user_ca"},
		},
		"whiteout through symlink": {
			{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "../secret"},
			{Name: "link/.wh.ssh_user_ca", Typeflag: tar.TypeReg},
		},
		"chown through symlink": {
			{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "../secret"},
			{Name: "link", Typeflag: tar.TypeDir, Mode: 0o777, Uid: 4242},
		},
	} {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			secret := filepath.Join(parent, "secret")
			os.Mkdir(secret, 0o700)
			write(t, filepath.Join(secret, "ssh_user_ca"), "HOST-SECRET-KEY")
			dir := filepath.Join(parent, "layer")
			os.Mkdir(dir, 0o755)
			_ = Unpack(context.Background(), openDir(t, dir), bytes.NewReader(tarOf(t, hdrs...)), UnpackOptions{Owners: true, Whiteouts: true, Devices: true})
			checkSentinel(t, parent)
		})
	}
}

// checkSentinel fails if anything beside layer and secret exists in
// parent, or secret changed.
func checkSentinel(t testing.TB, parent string) {
	t.Helper()
	ents, _ := os.ReadDir(parent)
	for _, e := range ents {
		if e.Name() != "layer" && e.Name() != "secret" {
			t.Fatalf("%s created outside the layer", e.Name())
		}
	}
	secret := filepath.Join(parent, "secret")
	st := lstat(t, secret)
	if st.Mode&0o7777 != 0o700 || st.Uid != 0 || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Fatalf("secret dir changed: mode %o uid %d", st.Mode, st.Uid)
	}
	ents, _ = os.ReadDir(secret)
	if len(ents) != 1 {
		t.Fatalf("secret dir holds %d entries", len(ents))
	}
	fs := lstat(t, filepath.Join(secret, "ssh_user_ca"))
	if b, _ := os.ReadFile(filepath.Join(secret, "ssh_user_ca")); string(b) != "HOST-SECRET-KEY" || fs.Nlink != 1 || fs.Mode&0o7777 != 0o644 || fs.Uid != 0 {
		t.Fatalf("secret file changed: %q nlink %d mode %o", b, fs.Nlink, fs.Mode)
	}
}

func TestUnpackOptions(t *testing.T) {
	requireRoot(t)
	data := tarOf(t,
		tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		tar.Header{Name: "bin/su", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 7, Gid: 7},
		tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		tar.Header{Name: "etc/.wh.gone", Typeflag: tar.TypeReg},
		tar.Header{Name: "opt/.wh..wh..opq", Typeflag: tar.TypeReg},
	)
	plain := t.TempDir()
	if err := Unpack(context.Background(), openDir(t, plain), bytes.NewReader(data), UnpackOptions{MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, filepath.Join(plain, "bin/su")); st.Uid != 0 || st.Mode&0o7777 != 0o755 {
		t.Errorf("without Owners: su uid %d mode %o, want 0 and 755", st.Uid, st.Mode&0o7777)
	}
	if _, err := os.Lstat(filepath.Join(plain, "dev/null")); err == nil {
		t.Error("device created without Devices")
	}
	if _, err := os.Lstat(filepath.Join(plain, "etc/.wh.gone")); err != nil {
		t.Errorf("without Whiteouts a .wh. name is a plain file: %v", err)
	}
	layer := t.TempDir()
	if err := Unpack(context.Background(), openDir(t, layer), bytes.NewReader(data), UnpackOptions{Owners: true, Devices: true, Whiteouts: true}); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, filepath.Join(layer, "bin/su")); st.Uid != 7 || st.Mode&0o7777 != 0o4755 {
		t.Errorf("with Owners: su uid %d mode %o, want 7 and 4755", st.Uid, st.Mode&0o7777)
	}
	if st := lstat(t, filepath.Join(layer, "etc/gone")); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout: mode %o rdev %d", st.Mode, st.Rdev)
	}
	big := tarOf(t, tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644})
	if err := Unpack(context.Background(), openDir(t, t.TempDir()), bytes.NewReader(big), UnpackOptions{MaxBytes: 3}); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Errorf("MaxBytes: %v", err)
	}
}
