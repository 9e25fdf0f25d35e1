package main

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

// baseline is a bundle of the benchmark's image for a bare `runc run`.
type baseline struct {
	runc, bundle, root, prefix string
}

// newBaseline unpacks img's root filesystem into bundle/rootfs and writes
// runc's default spec with the process set to /bin/true.
func newBaseline(ctx context.Context, runc string, img v1.Image, bundle, root string) (*baseline, error) {
	b := &baseline{runc: runc, bundle: bundle, root: root, prefix: fmt.Sprintf("cove-bench-%d-", os.Getpid())}
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	if err := extract(ctx, img, rootfs); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, runc, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("runc spec: %w: %s", err, out)
	}
	path := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	s.Process.Terminal = false
	s.Process.Args = []string{"/bin/true"}
	if raw, err = json.MarshalIndent(&s, "", "  "); err != nil {
		return nil, err
	}
	return b, os.WriteFile(path, raw, 0o644)
}

// extract writes img's flattened file system into dir with tar.
func extract(ctx context.Context, img v1.Image, dir string) error {
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

// runOnce times `runc run` of /bin/true in a fresh container, then deletes it.
func (b *baseline) runOnce(ctx context.Context, suffix string) (time.Duration, error) {
	id := b.prefix + suffix
	cmd := exec.CommandContext(ctx, b.runc, "--root", b.root, "run", "--bundle", b.bundle, id)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	b.delete(id)
	if err != nil {
		return 0, fmt.Errorf("runc run: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return d, nil
}

// delete removes container id if runc still knows it.
func (b *baseline) delete(id string) { deleteContainer(b.runc, b.root, id) }

// cleanup deletes every container left in the baseline's runc root.
func (b *baseline) cleanup() { deleteContainers(b.runc, b.root) }

// deleteContainer force-deletes container id from runc root, if present.
func deleteContainer(runc, root, id string) {
	if _, err := os.Stat(filepath.Join(root, id)); err != nil {
		return
	}
	if out, err := exec.Command(runc, "--root", root, "delete", "--force", id).CombinedOutput(); err != nil {
		progress("cleanup: runc delete %s: %v: %s", id, err, strings.TrimSpace(string(out)))
	}
}

// deleteContainers force-deletes every container in runc root.
func deleteContainers(runc, root string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			progress("cleanup: deleting leftover container %s", e.Name())
			deleteContainer(runc, root, e.Name())
		}
	}
}
