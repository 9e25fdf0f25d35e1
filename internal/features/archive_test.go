package features

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/covedev/cove/internal/testutil"
)

func TestUntarConfined(t *testing.T) {
	for name, entries := range map[string][]tar.Header{
		"dotdot":   {{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644}},
		"absolute": {{Name: "/etc/evil", Typeflag: tar.TypeReg, Mode: 0o644}},
		"through symlink": {
			{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/tmp"},
			{Name: "link/evil", Typeflag: tar.TypeReg, Mode: 0o644},
		},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range entries {
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
		}
		tw.Close()
		dir := filepath.Join(t.TempDir(), "x")
		os.Mkdir(dir, 0o755)
		if err := untar(context.Background(), &buf, dir); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "evil")); err == nil {
			t.Errorf("%s: wrote outside", name)
		}
	}
}

// TestUntarChmodThroughSymlink is the review's F4 reproduction: a feature
// tarball holding a symlink x -> <host dir> and then the directory entry x/
// with mode 0777. The runner unpacks as root: the host directory's mode
// must stay as it was.
func TestUntarChmodThroughSymlink(t *testing.T) {
	testutil.RequireRoot(t, "the runner unpacks as root")
	host := filepath.Join(t.TempDir(), "etc")
	if err := os.Mkdir(host, 0o700); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []tar.Header{
		{Name: "install.sh", Typeflag: tar.TypeReg, Mode: 0o755},
		{Name: "x", Typeflag: tar.TypeSymlink, Linkname: host},
		{Name: "x/", Typeflag: tar.TypeDir, Mode: 0o777},
	} {
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	dir := filepath.Join(t.TempDir(), "f")
	os.Mkdir(dir, 0o755)
	_ = untar(context.Background(), &buf, dir)
	fi, err := os.Stat(host)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("host directory chmodded through the feature's symlink: %o", fi.Mode().Perm())
	}
}
