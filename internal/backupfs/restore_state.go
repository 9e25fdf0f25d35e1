package backupfs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/errdefs"
)

// sync makes what the restore wrote durable: one syncfs(2) per target
// (the targets of one environment share a file system: the later ones
// find nothing left to write).
func (r *restorer) sync() error {
	for _, t := range r.targets {
		if err := unix.Syncfs(t.fd); err != nil {
			if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
				return errdefs.ResourceExhausted(fmt.Errorf("disk full while writing the restored files of %s to disk: %w", t.Name, err))
			}
			return fmt.Errorf("write the restored files of %s to disk: %w", t.Name, err)
		}
	}
	return nil
}

type target struct {
	Source
	fd   int // the target directory, O_RDONLY
	seen bool
}

// openTarget opens a target directory and checks it is empty.
func openTarget(t Source) (*target, error) {
	d, err := confine.OpenDir(t.Dir)
	if err != nil {
		return nil, fmt.Errorf("restore target %s: %w", t.Name, err)
	}
	defer d.Close()
	fd, err := unix.Openat(d.Fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("restore target %s: open %s: %w", t.Name, t.Dir, err)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("restore target %s: %w", t.Name, err)
	}
	f := os.NewFile(uintptr(dup), t.Dir)
	some, err := f.Readdirnames(1)
	f.Close()
	if err != nil && err != io.EOF {
		unix.Close(fd)
		return nil, fmt.Errorf("restore target %s: read %s: %w", t.Name, t.Dir, err)
	}
	if len(some) > 0 {
		unix.Close(fd)
		return nil, errdefs.FailedPrecondition(fmt.Errorf("restore target %s: %s is not empty (it holds %q): a restore only writes into an empty directory", t.Name, t.Dir, some[0]))
	}
	return &target{Source: t, fd: fd}, nil
}

type restorer struct {
	ctx     context.Context
	repo    *backuprepo.Repo
	opts    RestoreOptions
	log     *slog.Logger
	targets []*target
	stack   []*dirRef // the directories along the walk's path
	ignored string    // the last tree listed in Ignored
	walkSeq int64     // the walk's current entry (orders Failed)

	pool // the workers, and what they share with the walk

	// Guarded by pool.mu:
	res          RestoreResult
	failed       []failure
	progress     Progress
	lastProgress time.Time
}

// failure is an entry of Failed and where it is in the manifest.
type failure struct {
	seq int64
	FileError
}

func (r *restorer) closeTargets() {
	for _, t := range r.targets {
		unix.Close(t.fd)
	}
}

// result is the result so far (when the workers are done).
func (r *restorer) result() RestoreResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := r.res
	slices.SortFunc(r.failed, func(a, b failure) int { return cmp.Compare(a.seq, b.seq) })
	res.Failed = nil
	for _, f := range r.failed {
		res.Failed = append(res.Failed, f.FileError)
	}
	res.Overflow = r.overflow.Load()
	return res
}

// report calls Progress (r.mu held).
func (r *restorer) report(final bool) {
	if r.opts.Progress == nil {
		return
	}
	if now := time.Now(); final || now.Sub(r.lastProgress) >= progressEvery {
		r.lastProgress = now
		r.opts.Progress(r.progress)
	}
}

// fail lists p, the walk's current entry, as not restored.
func (r *restorer) fail(p string, err error) { r.failAt(r.walkSeq, p, err) }

// failAt lists p, entry seq of the manifest, as not restored. The list
// keeps the first MaxListed in manifest order, whatever order the workers
// finish in.
func (r *restorer) failAt(seq int64, p string, err error) {
	r.log.Warn("not restored", "path", p, "err", err)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.FailedCount++
	f := failure{seq, FileError{Path: p, Err: err}}
	if len(r.failed) < MaxListed {
		r.failed = append(r.failed, f)
		return
	}
	last := 0
	for i := range r.failed {
		if r.failed[i].seq > r.failed[last].seq {
			last = i
		}
	}
	if seq < r.failed[last].seq {
		r.failed[last] = f
	}
}

// local handles an error of the target's file system creating p, the
// walk's current entry (see localAt).
func (r *restorer) local(p string, err error) error { return r.localAt(r.walkSeq, p, err) }

// localAt handles an error of the target's file system creating p, entry
// seq: fatal when the disk is full or failing, else p is listed as failed.
func (r *restorer) localAt(seq int64, p string, err error) error {
	switch {
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return errdefs.ResourceExhausted(fmt.Errorf("disk full while restoring %q: %w", p, err))
	case errors.Is(err, unix.EIO), errors.Is(err, unix.EROFS):
		return fmt.Errorf("restoring %q: %w", p, err)
	case r.ctx.Err() != nil:
		return r.ctx.Err()
	}
	r.failAt(seq, p, err)
	return nil
}

// targetFor returns the target holding backup path p, or nil.
func (r *restorer) targetFor(p string) *target {
	for _, t := range r.targets {
		if within(p, t.Name) {
			return t
		}
	}
	return nil
}

// popTo leaves the directories that do not hold p ("" leaves them all):
// each is done once its files being written are (see release).
func (r *restorer) popTo(p string) {
	for n := len(r.stack); n > 0; n = len(r.stack) {
		d := r.stack[n-1]
		if p != "" && strings.HasPrefix(p, d.path+"/") {
			return
		}
		r.stack = r.stack[:n-1]
		r.release(d)
	}
}
