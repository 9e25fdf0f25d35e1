package benchkit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Baseline is a bundle of the benchmark's image for a bare `runc run`.
type Baseline struct {
	Runc, Bundle, Root, Prefix string
	// CgroupParent, when set, is the cgroup (relative to each hierarchy's
	// root) below which each container gets its own cgroup named by its id.
	CgroupParent string
}

// NewBaseline unpacks img's root filesystem into bundle/rootfs and writes
// runc's default spec with the process set to args.
func NewBaseline(ctx context.Context, runc string, img v1.Image, bundle, root string, args ...string) (*Baseline, error) {
	b := &Baseline{Runc: runc, Bundle: bundle, Root: root, Prefix: fmt.Sprintf("cove-bench-%d-", os.Getpid())}
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	if err := Extract(ctx, img, rootfs); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, runc, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("runc spec: %w: %s", err, out)
	}
	return b, b.editSpec(func(s *specs.Spec) {
		s.Process.Terminal = false
		s.Process.Args = args
	})
}

// editSpec rewrites the bundle's config.json through edit.
func (b *Baseline) editSpec(edit func(*specs.Spec)) error {
	path := filepath.Join(b.Bundle, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var s specs.Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	edit(&s)
	if raw, err = json.MarshalIndent(&s, "", "  "); err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o644)
}

// Extract writes img's flattened file system into dir with tar.
func Extract(ctx context.Context, img v1.Image, dir string) error {
	rc := mutate.Extract(img)
	defer rc.Close()
	cmd := exec.CommandContext(ctx, "tar", "-x", "--numeric-owner", "-C", dir, "-f", "-")
	cmd.Stdin = rc
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("unpack image: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// RunOnce times `runc run` of the bundle's process in a fresh container,
// then deletes it.
func (b *Baseline) RunOnce(ctx context.Context, suffix string) (time.Duration, error) {
	id := b.Prefix + suffix
	cmd := exec.CommandContext(ctx, b.Runc, "--root", b.Root, "run", "--bundle", b.Bundle, id)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	b.Delete(id)
	if err != nil {
		return 0, fmt.Errorf("runc run: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return d, nil
}

// StartDetached starts the bundle's process as container Prefix+suffix
// with `runc run --detach`, in cgroup CgroupParent/<id> when CgroupParent
// is set, and returns the container's id and how long the start took.
func (b *Baseline) StartDetached(ctx context.Context, suffix string) (string, time.Duration, error) {
	id := b.Prefix + suffix
	if b.CgroupParent != "" {
		// One bundle, many containers: runc reads config.json at create,
		// so the cgroup path is rewritten before each start.
		if err := b.editSpec(func(s *specs.Spec) { s.Linux.CgroupsPath = "/" + b.CgroupParent + "/" + id }); err != nil {
			return id, 0, err
		}
	}
	// The container keeps runc's stdio: files, not pipes, or Wait would
	// wait for the container to exit.
	errFile, err := os.CreateTemp("", "cove-bench-runc-stderr-")
	if err != nil {
		return id, 0, err
	}
	defer os.Remove(errFile.Name())
	defer errFile.Close()
	cmd := exec.CommandContext(ctx, b.Runc, "--root", b.Root, "run", "--detach", "--bundle", b.Bundle, id)
	cmd.Stderr = errFile // Stdin and Stdout: /dev/null
	t0 := time.Now()
	err = cmd.Run()
	d := time.Since(t0)
	if err != nil {
		b.Delete(id)
		msg, _ := os.ReadFile(errFile.Name())
		return id, 0, fmt.Errorf("runc run --detach %s: %w: %s", id, err, strings.TrimSpace(string(msg)))
	}
	return id, d, nil
}

// Delete removes container id if runc still knows it.
func (b *Baseline) Delete(id string) { DeleteContainer(b.Runc, b.Root, id) }

// Cleanup deletes every container left in the baseline's runc root.
func (b *Baseline) Cleanup() { DeleteContainers(b.Runc, b.Root) }

// DeleteContainer force-deletes container id from runc root, if present.
func DeleteContainer(runc, root, id string) {
	if _, err := os.Stat(filepath.Join(root, id)); err != nil {
		return
	}
	if out, err := exec.Command(runc, "--root", root, "delete", "--force", id).CombinedOutput(); err != nil {
		Progress("cleanup: runc delete %s: %v: %s", id, err, strings.TrimSpace(string(out)))
	}
}

// DeleteContainers force-deletes every container in runc root.
func DeleteContainers(runc, root string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			Progress("cleanup: deleting leftover container %s", e.Name())
			DeleteContainer(runc, root, e.Name())
		}
	}
}
