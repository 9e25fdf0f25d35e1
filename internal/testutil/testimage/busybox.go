// Package testimage builds the OCI images cove's tests run — a tiny busybox
// image and a Debian userland — from what is installed on the test machine,
// and serves them from an in-process registry on 127.0.0.1. Tests never pull
// from the internet.
package testimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// BusyboxPath is the static busybox binary the busybox image is built from
// (Debian package busybox-static).
const BusyboxPath = "/bin/busybox"

// DefaultPath is the PATH set in the images' configuration.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// DevUID and DevGID are the ids of the non-root user "dev" in the test images.
const (
	DevUID = 1000
	DevGID = 1000
)

// epoch is the modification time of every file in built layers, so that
// builds are reproducible.
var epoch = time.Unix(0, 0).UTC()

// Busybox returns a single-layer image made of the host's static busybox:
// /bin/busybox with a symlink per applet, /etc/passwd and /etc/group with
// root and dev (1000:1000, home /home/dev), /tmp (1777), /root and
// /home/dev. Its configuration sets PATH and runs /bin/sh.
func Busybox() (v1.Image, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("busybox image needs busybox-static: %w", err)
	}
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	applets := strings.Fields(string(out))

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: epoch, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	steps := []func() error{
		func() error { return dir("bin", 0o755, 0) },
		func() error { return dir("etc", 0o755, 0) },
		func() error { return dir("home", 0o755, 0) },
		func() error { return dir("home/dev", 0o755, DevUID) },
		func() error { return dir("root", 0o700, 0) },
		func() error { return dir("tmp", 0o1777, 0) },
		func() error { return dir("usr", 0o755, 0) },
		func() error { return dir("usr/bin", 0o755, 0) },
		func() error { return dir("var", 0o755, 0) },
		func() error { return file("bin/busybox", 0o755, bin) },
		func() error {
			return file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"+
				fmt.Sprintf("dev:x:%d:%d:dev:/home/dev:/bin/sh\n", DevUID, DevGID)+
				"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
		},
		func() error {
			return file("etc/group", 0o644, []byte(fmt.Sprintf("root:x:0:\ndev:x:%d:\nnogroup:x:65534:\n", DevGID)))
		},
		func() error { return file("etc/hostname", 0o644, []byte("busybox\n")) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, fmt.Errorf("busybox layer: %w", err)
		}
	}
	for _, a := range applets {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, fmt.Errorf("busybox layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("busybox layer: %w", err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("busybox layer: %w", err)
	}
	return imageFromLayer(layer, []string{"/bin/sh"})
}

// imageFromLayer returns a one-layer linux image for the host architecture.
func imageFromLayer(layer v1.Layer, cmd []string) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Env = []string{"PATH=" + DefaultPath}
	cf.Config.Cmd = cmd
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return img, nil
}
