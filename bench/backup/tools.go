package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// step is one of the timed steps, in the order they run.
type step int

const (
	stepFull     step = iota // a full backup of the data set (cold cache)
	stepIncr                 // an incremental after a ~1% change (cold cache)
	stepIncrWarm             // an incremental after another ~1% change (warm cache)
	stepNoop                 // an incremental with nothing changed (warm cache)
	stepRestore              // a restore of the latest backup into an empty directory (cold cache)
	nSteps
)

var stepNames = [nSteps]string{"full backup", "incremental (~1%), cold", "incremental (~1%), warm", "no change, warm", "restore (latest)"}

// warm reports whether a step runs with the tree's metadata in the cache
// (the page cache is not dropped before it; the tree is walked before the
// first warm step): a periodic backup of a running environment.
func (s step) warm() bool { return s == stepIncrWarm || s == stepNoop }

// tool is one way of backing up: cove or a baseline. Each instance lives
// for one round with its own storage under a directory of the work dir.
type tool interface {
	name() string
	// storage is the directory whose size is what the tool stored.
	storage() string
	// backup takes the backup of the given step of src.
	backup(ctx context.Context, src string, s step) (usage, error)
	// restore restores the latest backup into dst, an empty directory.
	restore(ctx context.Context, dst string) (usage, error)
}

// usage is what a step cost besides its wall time.
type usage struct {
	cpu  time.Duration // user + system CPU of the tool's processes
	note string        // what the tool said it did, if anything
}

// tarTool is Gitpod's approach: tar piped into zstd, incrementals with GNU
// tar's --listed-incremental, restore = each archive through zstd -d into
// tar x, in order.
type tarTool struct {
	dir      string // archives (stored) go in dir/archives, snapshot files in dir
	level    int
	archives []string
}

func newTarTool(dir string, level int) (*tarTool, error) {
	if err := os.MkdirAll(filepath.Join(dir, "archives"), 0o700); err != nil {
		return nil, err
	}
	return &tarTool{dir: dir, level: level}, nil
}

func (t *tarTool) name() string    { return "tar|zstd" }
func (t *tarTool) storage() string { return filepath.Join(t.dir, "archives") }

func (t *tarTool) backup(ctx context.Context, src string, s step) (usage, error) {
	n := len(t.archives)
	snar := filepath.Join(t.dir, fmt.Sprintf("level-%d.snar", n))
	if n > 0 { // a level-n dump starts from the snapshot file of level n-1
		if err := copyFile(filepath.Join(t.dir, fmt.Sprintf("level-%d.snar", n-1)), snar); err != nil {
			return usage{}, err
		}
	}
	out := filepath.Join(t.storage(), fmt.Sprintf("level-%d.tar.zst", n))
	tar := exec.CommandContext(ctx, "tar", "--create", "--file=-", "--listed-incremental="+snar, "--numeric-owner", "--directory="+src, ".")
	zst := exec.CommandContext(ctx, "zstd", "-q", "-T0", "-"+strconv.Itoa(t.level), "-o", out)
	cpu, err := pipeline(tar, zst)
	if err != nil {
		return usage{}, err
	}
	// cove and restic fsync what they store: so does this.
	if err := fsyncFile(out); err != nil {
		return usage{}, err
	}
	t.archives = append(t.archives, out)
	return usage{cpu: cpu}, nil
}

func (t *tarTool) restore(ctx context.Context, dst string) (usage, error) {
	var total time.Duration
	for _, a := range t.archives {
		zst := exec.CommandContext(ctx, "zstd", "-q", "-d", "-c", a)
		// --listed-incremental=/dev/null: an incremental archive's
		// directory listings delete what was deleted since.
		tar := exec.CommandContext(ctx, "tar", "--extract", "--file=-", "--listed-incremental=/dev/null", "--numeric-owner", "--directory="+dst)
		cpu, err := pipeline(zst, tar)
		total += cpu
		if err != nil {
			return usage{cpu: total}, fmt.Errorf("%s: %w", filepath.Base(a), err)
		}
	}
	return usage{cpu: total, note: fmt.Sprintf("%d archives", len(t.archives))}, nil
}

// resticTool is restic with a local repository (compression auto, the
// default of repository version 2), its cache in the work dir, kept
// between steps as on a user's machine.
type resticTool struct {
	dir string
}

func newResticTool(ctx context.Context, dir string) (*resticTool, error) {
	t := &resticTool{dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte("bench-backup-password\n"), 0o600); err != nil {
		return nil, err
	}
	if _, err := t.run(ctx, "", "init"); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *resticTool) name() string    { return "restic" }
func (t *resticTool) storage() string { return filepath.Join(t.dir, "repo") }

func (t *resticTool) run(ctx context.Context, wd string, args ...string) (time.Duration, error) {
	args = append(args, "--repo", t.storage(), "--password-file", filepath.Join(t.dir, "password"),
		"--cache-dir", filepath.Join(t.dir, "cache"), "--quiet")
	cmd := exec.CommandContext(ctx, "restic", args...)
	cmd.Dir = wd
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return cpu, fmt.Errorf("restic %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return cpu, nil
}

func (t *resticTool) backup(ctx context.Context, src string, s step) (usage, error) {
	// From inside src with ".": the snapshot holds src's content at its
	// root, and each backup finds the previous one as its parent.
	cpu, err := t.run(ctx, src, "backup", "--host", "bench", ".")
	return usage{cpu: cpu}, err
}

func (t *resticTool) restore(ctx context.Context, dst string) (usage, error) {
	cpu, err := t.run(ctx, "", "restore", "latest", "--target", dst)
	return usage{cpu: cpu}, err
}

// pipeline runs a | b and returns the CPU both used.
func pipeline(a, b *exec.Cmd) (time.Duration, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	var ea, eb bytes.Buffer
	a.Stdout, a.Stderr = w, &ea
	b.Stdin, b.Stderr = r, &eb
	if err := a.Start(); err != nil {
		r.Close()
		w.Close()
		return 0, err
	}
	w.Close()
	errB := b.Run()
	r.Close()
	errA := a.Wait()
	var cpu time.Duration
	for _, c := range []*exec.Cmd{a, b} {
		if c.ProcessState != nil {
			cpu += c.ProcessState.UserTime() + c.ProcessState.SystemTime()
		}
	}
	if errA != nil {
		return cpu, fmt.Errorf("%s: %w: %s", a.Args[0], errA, strings.TrimSpace(ea.String()))
	}
	if errB != nil {
		return cpu, fmt.Errorf("%s: %w: %s", b.Args[0], errB, strings.TrimSpace(eb.String()))
	}
	return cpu, nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o600)
}

func fsyncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
