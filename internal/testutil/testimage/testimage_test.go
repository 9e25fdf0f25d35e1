package testimage

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// entries returns the flattened file system of img by path.
func entries(t *testing.T, img v1.Image) map[string]*tar.Header {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	m := map[string]*tar.Header{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return m
		}
		if err != nil {
			t.Fatal(err)
		}
		m[strings.TrimSuffix(strings.TrimPrefix(hdr.Name, "./"), "/")] = hdr
	}
}

func readFile(t *testing.T, img v1.Image, path string) string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not found: %v", path, err)
		}
		if strings.TrimPrefix(hdr.Name, "./") == path {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}

func TestBusybox(t *testing.T) {
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skip("busybox-static is not installed")
	}
	img, err := Busybox()
	if err != nil {
		t.Fatal(err)
	}
	m := entries(t, img)
	for path, want := range map[string]struct {
		typ  byte
		mode int64
		uid  int
	}{
		"bin/busybox": {tar.TypeReg, 0o755, 0},
		"tmp":         {tar.TypeDir, 0o1777, 0},
		"root":        {tar.TypeDir, 0o700, 0},
		"home/dev":    {tar.TypeDir, 0o755, DevUID},
		"etc/passwd":  {tar.TypeReg, 0o644, 0},
		"etc/group":   {tar.TypeReg, 0o644, 0},
	} {
		h, ok := m[path]
		if !ok {
			t.Errorf("%s missing", path)
			continue
		}
		if h.Typeflag != want.typ || h.Mode&0o7777 != want.mode || h.Uid != want.uid {
			t.Errorf("%s: type %c mode %o uid %d, want %c %o %d", path, h.Typeflag, h.Mode, h.Uid, want.typ, want.mode, want.uid)
		}
	}
	for _, applet := range []string{"sh", "ls", "cat", "id", "sleep"} {
		h, ok := m["bin/"+applet]
		if !ok || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
			t.Errorf("bin/%s: %+v, want symlink to busybox", applet, h)
		}
	}
	if passwd := readFile(t, img, "etc/passwd"); !strings.Contains(passwd, "dev:x:1000:1000:dev:/home/dev:/bin/sh\n") || !strings.HasPrefix(passwd, "root:x:0:0:") {
		t.Errorf("unexpected /etc/passwd:\n%s", passwd)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.Config.Cmd) != 1 || cf.Config.Cmd[0] != "/bin/sh" || len(cf.Config.Env) != 1 || cf.Config.Env[0] != "PATH="+DefaultPath || cf.OS != "linux" {
		t.Errorf("unexpected config: %+v", cf.Config)
	}
	// Reproducible: building twice gives the same digest.
	img2, err := Busybox()
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := img2.Digest()
	if d1 != d2 {
		t.Errorf("busybox image is not reproducible: %s != %s", d1, d2)
	}
}

func TestServeRoundTrip(t *testing.T) {
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skip("busybox-static is not installed")
	}
	img, err := Busybox()
	if err != nil {
		t.Fatal(err)
	}
	addr := Serve(t, map[string]v1.Image{"test/busybox:latest": img, "other/name:v1": img})
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("Serve address %q is not on loopback", addr)
	}
	want, _ := img.Digest()
	for _, ref := range []string{"test/busybox:latest", "other/name:v1"} {
		r, err := name.ParseReference(addr + "/" + ref)
		if err != nil {
			t.Fatal(err)
		}
		pulled, err := remote.Image(r)
		if err != nil {
			t.Fatalf("pull %s: %v", r, err)
		}
		got, err := pulled.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s: digest %s, want %s", ref, got, want)
		}
		if _, ok := entries(t, pulled)["bin/busybox"]; !ok {
			t.Errorf("%s: pulled image lacks bin/busybox", ref)
		}
	}
	r, _ := name.ParseReference(addr + "/test/missing:latest")
	if _, err := remote.Image(r); err == nil {
		t.Error("pulling an image that was not pushed succeeded")
	}
}

func TestServeOn(t *testing.T) {
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skip("busybox-static is not installed")
	}
	img, err := Busybox()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop, err := ServeOn(ln, map[string]v1.Image{"bench/busybox:latest": img})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(ln.Addr().String() + "/bench/busybox:latest")
	if _, err := remote.Head(r); err != nil {
		t.Fatalf("head: %v", err)
	}
	stop()
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("registry still listening after stop")
	}
}

func TestServeOnBadName(t *testing.T) {
	img, err := Busybox()
	if err != nil {
		t.Skip(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if stop, err := ServeOn(ln, map[string]v1.Image{"Bad Name!": img}); err == nil {
		stop()
		t.Fatal("ServeOn accepted an invalid image name")
	}
}

func TestDebian(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: builds a Debian userland with mmdebstrap on first run")
	}
	testutil.RequireRoot(t, "to build the Debian image")
	testutil.RequireTool(t, "mmdebstrap")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	img, err := Debian(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	m := entries(t, img)
	for _, p := range []string{"usr/bin/bash", "usr/bin/git", "usr/bin/rsync", "usr/bin/sudo", "usr/bin/ps", "etc/sudoers.d/dev"} {
		if h, ok := m[p]; !ok || h.Typeflag != tar.TypeReg {
			t.Errorf("%s missing from the Debian layer", p)
		}
	}
	if h, ok := m["home/dev"]; !ok || h.Uid != DevUID || h.Gid != DevGID {
		t.Errorf("home/dev = %+v, want owned by 1000:1000", h)
	}
	for p, h := range m {
		if h.Typeflag == tar.TypeChar || h.Typeflag == tar.TypeBlock {
			t.Errorf("device node %s in the layer", p)
		}
	}
	if passwd := readFile(t, img, "etc/passwd"); !strings.Contains(passwd, "dev:x:1000:1000::/home/dev:/bin/bash") {
		t.Errorf("dev user missing from /etc/passwd:\n%s", passwd)
	}
	// A second call uses the cache and yields the same image.
	start := time.Now()
	img2, err := Debian(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := img2.Digest()
	if d1 != d2 {
		t.Errorf("cached Debian image differs: %s != %s", d1, d2)
	}
	t.Logf("cached Debian image %s in %v", d2, time.Since(start))
}
