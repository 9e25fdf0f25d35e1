package benchkit

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/covedev/cove/internal/testutil/testimage"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// LoadImage returns the named test image and its "repo:tag".
func LoadImage(ctx context.Context, which string) (v1.Image, string, error) {
	switch which {
	case "busybox":
		img, err := testimage.Busybox()
		return img, "test/busybox:latest", err
	case "debian":
		img, err := testimage.Debian(ctx, Progress)
		return img, "test/debian:latest", err
	}
	return nil, "", fmt.Errorf("unknown image %q (use busybox or debian)", which)
}

// ServeImage serves img as name from an in-process registry on loopback.
func ServeImage(img v1.Image, name string) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	stop, err = testimage.ServeOn(ln, map[string]v1.Image{name: img})
	if err != nil {
		return "", nil, fmt.Errorf("serve image: %w", err)
	}
	return ln.Addr().String(), stop, nil
}

// MakeRepo makes a small git repository without devcontainer.json.
func MakeRepo(ctx context.Context, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	files := map[string]string{
		"README.md": "# bench\n\nA repository for cove's start benchmark.\n",
		"main.go":   "package main\n\nfunc main() {}\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return "", err
		}
	}
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"},
		{"add", "."},
		{"-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q", "-m", "bench"},
	} {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("git %s: %w: %s", args[0], err, b)
		}
	}
	return dir, nil
}

// RemoveTree unmounts whatever is still mounted under dir (deepest first)
// and removes it. It leaves dir in place if a mount cannot be removed, so
// nothing is deleted through a mount.
func RemoveTree(dir string) {
	for _, m := range mountsUnder(dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			Progress("cleanup: unmount %s: %v", m, err)
		}
	}
	if left := mountsUnder(dir); len(left) > 0 {
		Progress("cleanup: %s still has mounts (%s); not removing it", dir, strings.Join(left, ", "))
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		Progress("cleanup: %v", err)
	}
}

// mountsUnder lists the mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Inputs are what a benchmark's environments are made from.
type Inputs struct {
	Cove     string   // the cove binary
	Image    v1.Image // busybox (for bare runc baselines)
	ImageRef string   // Image, served by an in-process registry
	Repo     string   // a git repository whose devcontainer.json uses it
}

// Prepare gets the inputs ready in tmp: cove (built from the enclosing
// module unless given), the busybox image served until cl runs, the
// repository.
func Prepare(ctx context.Context, tmp, cove string, cl *Cleanups) (Inputs, error) {
	in := Inputs{Cove: cove}
	if in.Cove == "" {
		Progress("building cove")
		var err error
		if in.Cove, err = BuildCove(ctx, tmp); err != nil {
			return in, err
		}
	}
	img, imgName, err := LoadImage(ctx, "busybox")
	if err != nil {
		return in, err
	}
	reg, stopReg, err := ServeImage(img, imgName)
	if err != nil {
		return in, err
	}
	cl.Add(stopReg)
	in.Image, in.ImageRef = img, reg+"/"+imgName
	if in.Repo, err = MakeRepo(ctx, filepath.Join(tmp, "repo")); err != nil {
		return in, err
	}
	return in, nil
}
