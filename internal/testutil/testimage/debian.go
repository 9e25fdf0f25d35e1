package testimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
)

// CacheEnv names the environment variable that overrides the directory where
// built Debian tarballs are cached.
const CacheEnv = "COVE_TEST_CACHE"

// DefaultCacheDir is where built Debian tarballs are cached without CacheEnv.
// It is outside any checkout, so a rebuild is rare.
const DefaultCacheDir = "/var/cache/cove-test"

// hostSources is the host's apt source list, used as the mirror so the build
// uses the same (possibly snapshot or proxied) archive as the host.
const hostSources = "/etc/apt/sources.list.d/debian.sources"

// debianRecipe returns mmdebstrap's arguments (without the output path) and
// the extra input whose content is part of the cache key.
func debianRecipe() (args []string, extra []byte) {
	args = []string{
		"--variant=minbase",
		"--mode=root",
		"--format=tar",
		"--include=bash,git,rsync,procps,ca-certificates,sudo,less",
		"--dpkgopt=path-exclude=/usr/share/doc/*",
		"--dpkgopt=path-include=/usr/share/doc/*/copyright",
		"--dpkgopt=path-exclude=/usr/share/man/*",
		"--dpkgopt=path-exclude=/usr/share/locale/*",
		"--dpkgopt=path-exclude=/usr/share/info/*",
		"--customize-hook=chroot \"$1\" useradd --create-home --uid 1000 --user-group --shell /bin/bash dev",
		"--customize-hook=echo 'dev ALL=(ALL) NOPASSWD:ALL' > \"$1/etc/sudoers.d/dev\" && chmod 0440 \"$1/etc/sudoers.d/dev\"",
		"--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin \"$1\"/var/log/*.log",
		"bookworm",
	}
	if b, err := os.ReadFile(hostSources); err == nil {
		extra = b
	}
	return args, extra
}

// Debian returns a one-layer image with a Debian bookworm userland built by
// mmdebstrap: bash, git, rsync, procps, ca-certificates and sudo, plus the
// user dev (1000:1000, /bin/bash, passwordless sudo). The layer is cached as
// a tarball in $COVE_TEST_CACHE (or /var/cache/cove-test) under a name that
// hashes the recipe, and built only when missing. Building needs root and
// network access to the host's Debian mirror; log receives progress lines.
func Debian(ctx context.Context, log func(string, ...any)) (v1.Image, error) {
	if log == nil {
		log = func(string, ...any) {}
	}
	args, extra := debianRecipe()
	h := sha256.New()
	fmt.Fprintf(h, "cove-test-debian v1\n%s\n", strings.Join(args, "\n"))
	h.Write(extra)
	key := hex.EncodeToString(h.Sum(nil))[:16]

	dir := os.Getenv(CacheEnv)
	if dir == "" {
		dir = DefaultCacheDir
	}
	path := filepath.Join(dir, "debian-"+key+".tar")
	if _, err := os.Stat(path); err != nil {
		if err := buildDebian(ctx, log, dir, path, args, extra); err != nil {
			return nil, err
		}
	}
	layer, err := tarball.LayerFromFile(path, tarball.WithCompressedCaching, tarball.WithCompressionLevel(1))
	if err != nil {
		return nil, fmt.Errorf("debian layer %s: %w", path, err)
	}
	return imageFromLayer(layer, []string{"/bin/bash"})
}

func buildDebian(ctx context.Context, log func(string, ...any), dir, path string, args []string, extra []byte) error {
	bin, err := exec.LookPath("mmdebstrap")
	if err != nil {
		return fmt.Errorf("building the Debian test image needs mmdebstrap (apt-get install mmdebstrap): %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("debian image cache: %w", err)
	}
	// Several test binaries may want the image at once: one builds, the
	// others wait for it.
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("debian image cache lock: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("debian image cache lock: %w", err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	if _, err := os.Stat(path); err == nil {
		return nil // built by someone else while we waited
	}

	raw := path + ".raw.tar"
	defer os.Remove(raw)
	cmdArgs := append([]string{}, args...)
	cmdArgs = append(cmdArgs, raw)
	if extra != nil {
		cmdArgs = append(cmdArgs, hostSources)
	}
	log("building Debian test image with mmdebstrap (a few minutes, cached at %s)", path)
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, cmdArgs...)
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mmdebstrap: %w: %s", err, tail(stderr.String(), 2000))
	}
	tmp := path + ".tmp"
	defer os.Remove(tmp)
	if err := filterTar(raw, tmp); err != nil {
		return fmt.Errorf("debian image: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("debian image: %w", err)
	}
	log("built Debian test image %s", path)
	return nil
}

// filterTar copies the tarball src to dst without device nodes (image
// layers do not carry them; the runtime provides /dev) and with names
// relative to the root ("etc/passwd" rather than "./etc/passwd").
func filterTar(src, dst string) (retErr error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if err := out.Close(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	tr := tar.NewReader(in)
	tw := tar.NewWriter(out)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", src, err)
		}
		if hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock {
			continue
		}
		hdr.Name = strings.TrimPrefix(hdr.Name, "./")
		if hdr.Name == "" {
			continue
		}
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = strings.TrimPrefix(hdr.Linkname, "./")
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", hdr.Name, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fmt.Errorf("write %s: %w", hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return out.Sync()
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}
