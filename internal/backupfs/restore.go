package backupfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/confine"
)

// Restore writes backup name into targets (matched by Name). Each target
// Dir must exist and be empty. An error is returned when nothing sensible
// could be done (manifest unreadable or corrupt, disk full, the store
// unreachable, a target not empty); otherwise the result lists the entries
// that failed, with the rest restored.
//
// Everything is created through the descriptor of a directory Restore
// created itself (or the target's own): an entry below a symlink, a file
// or anything that is not a restored directory fails, a hard link must
// lead to a regular file restored earlier in the same target (resolved
// beneath it without following any symlink). A file whose chunk is
// missing or corrupt is removed, not left under its name. Owners are mapped into
// opts.Map, modes (set-id bits included) set after the owner, then
// extended attributes (a capability last, as a chown clears it), then
// times; directories' times once their contents are done.
//
// One goroutine walks the manifest in order and creates directories,
// links and each file; opts.Workers workers fetch, open and
// write the files' chunks, several at once (see restore_pool.go), and
// set each file's metadata when its last chunk is written. Before Restore returns, what it wrote is on disk (syncfs of
// each target's file system): a caller may delete what it kept aside.
// Memory: a chunk per worker (sealed and opened: see RestoreWorkers), the
// open directories of the current path and those still holding a file
// being written, at most maxFilesInFlight files.
func Restore(ctx context.Context, repo *backuprepo.Repo, name string, targets []Source, opts RestoreOptions) (RestoreResult, error) {
	if err := opts.Map.validate(); err != nil {
		return RestoreResult{}, err
	}
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.Name
	}
	if err := checkNames(names); err != nil {
		return RestoreResult{}, err
	}
	r := &restorer{ctx: ctx, repo: repo, opts: opts, log: opts.Log}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	defer r.closeTargets()
	for _, t := range targets {
		rt, err := openTarget(t)
		if err != nil {
			return RestoreResult{}, err
		}
		r.targets = append(r.targets, rt)
	}
	m, err := repo.OpenManifest(ctx, name)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore backup %s: %w", name, err)
	}
	r.start()
	werr := r.walk(m, name)
	if werr != nil {
		r.stop(werr)
	}
	r.wait() // every file whole or removed, every directory closed
	if err := r.stopped(); err != nil {
		return r.result(), err
	}
	if err := r.sync(); err != nil {
		return r.result(), err
	}
	for _, t := range r.targets {
		if !t.seen {
			r.res.Missing = append(r.res.Missing, t.Name)
			r.log.Warn("the backup holds no tree for this target: left empty", "backup", name, "tree", t.Name)
		}
	}
	r.mu.Lock()
	r.report(true)
	r.mu.Unlock()
	return r.result(), nil
}

// walk restores the manifest's entries in order, handing files' content
// to the workers; it returns at the end of the manifest, or at the first
// error that stops the restore (its own or a worker's).
func (r *restorer) walk(m *backuprepo.ManifestReader, name string) error {
	for {
		if err := r.wctx.Err(); err != nil {
			return r.stopped()
		}
		e, err := m.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("restore backup %s: %w", name, err)
		}
		r.walkSeq++
		if err := r.entry(e); err != nil {
			return err
		}
	}
	r.popTo("")
	return nil
}

// entry restores one manifest entry.
func (r *restorer) entry(e *backuprepo.Entry) error {
	t := r.targetFor(e.Path)
	if t == nil {
		r.skipTree(e)
		return nil
	}
	r.popTo(e.Path)
	if e.Path == t.Name {
		t.seen = true
		if e.Type != backuprepo.TypeDir {
			r.fail(e.Path, fmt.Errorf("the backup's tree is a %s, not a directory", e.Type))
			return nil
		}
		fd, err := unix.FcntlInt(uintptr(t.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("restore %q: %w", e.Path, err)
		}
		r.stack = append(r.stack, r.newDir(e, fd))
		return r.metaOrFail(e, t, fd, -1, "")
	}
	n := len(r.stack)
	if n == 0 || r.stack[n-1].path != parentOf(e.Path) {
		r.fail(e.Path, errors.New("its parent was not restored as a directory (a symlink, a file, or missing in the backup)"))
		return nil
	}
	d, base := r.stack[n-1], path.Base(e.Path)
	pfd := d.fd
	switch e.Type {
	case backuprepo.TypeDir:
		return r.dir(e, t, pfd, base)
	case backuprepo.TypeFile:
		return r.file(e, t, d, base)
	case backuprepo.TypeSymlink:
		if err := unix.Symlinkat(e.Target, pfd, base); err != nil {
			return r.local(e.Path, fmt.Errorf("create symlink: %w", err))
		}
		return r.metaOrFail(e, t, -1, pfd, base)
	case backuprepo.TypeHardlink:
		return r.hardlink(e, t, pfd, base)
	case backuprepo.TypeWhiteout:
		if !t.Overlay {
			r.fail(e.Path, errors.New("a whiteout outside an overlay upper directory"))
			return nil
		}
		if err := unix.Mknodat(pfd, base, unix.S_IFCHR|e.Mode&0o777, 0); err != nil {
			return r.local(e.Path, fmt.Errorf("create whiteout: %w", err))
		}
		return r.metaOrFail(e, t, -1, pfd, base)
	}
	r.fail(e.Path, fmt.Errorf("entry type %q", e.Type))
	return nil
}

// skipTree lists the top of a tree of the backup no target asked for.
// Parents of a nested target's name, and parents Backup recorded for
// nested names (see isParent), are not trees: what is below them is.
func (r *restorer) skipTree(e *backuprepo.Entry) {
	p := e.Path
	if p == "." || r.ignored != "" && within(p, r.ignored) {
		return
	}
	for _, t := range r.targets {
		if strings.HasPrefix(t.Name, p+"/") {
			return
		}
	}
	if isParent(e) {
		return
	}
	r.ignored = p
	if len(r.res.Ignored) < MaxListed {
		r.res.Ignored = append(r.res.Ignored, p)
	}
}

// isParent reports whether e is what Backup records for a parent of nested
// tree names ("svc" and "svc/db" for "svc/db/upper").
func isParent(e *backuprepo.Entry) bool {
	return e.Type == backuprepo.TypeDir && e.Mode == parentMode && e.UID == 0 && e.GID == 0 &&
		e.Mtime == 0 && len(e.Xattrs) == 0 && !e.Opaque
}

func (r *restorer) dir(e *backuprepo.Entry, t *target, pfd int, base string) error {
	if len(r.stack) > confine.MaxDepth {
		r.fail(e.Path, fmt.Errorf("directories nested deeper than %d", confine.MaxDepth))
		return nil
	}
	if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
		return r.local(e.Path, fmt.Errorf("create directory: %w", err))
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return r.local(e.Path, fmt.Errorf("open the directory created: %w", err))
	}
	r.stack = append(r.stack, r.newDir(e, fd))
	return r.metaOrFail(e, t, fd, -1, "")
}

// metaOrFail sets the metadata of an entry just created; one that cannot
// be set is listed (or stops the restore, see local). The entry stays: a
// directory holds what follows, a link or whiteout has no content to
// lose.
func (r *restorer) metaOrFail(e *backuprepo.Entry, t *target, fd, pfd int, base string) error {
	if err := r.meta(e, t, fd, pfd, base); err != nil {
		return r.local(e.Path, err)
	}
	return nil
}

// hardlink links p to a regular file restored earlier in the same target,
// found beneath it without following a symlink.
func (r *restorer) hardlink(e *backuprepo.Entry, t *target, pfd int, base string) error {
	if !strings.HasPrefix(e.Target, t.Name+"/") {
		r.fail(e.Path, fmt.Errorf("hard link to %q, outside its tree %s", e.Target, t.Name))
		return nil
	}
	// A file still being written is not whole yet, and is removed if it
	// fails: linked now, it would keep partial content under the link's
	// name (REV-S8-5).
	if err := r.waitFiles(func(j *fileJob) bool { return j.e.Path == e.Target }); err != nil {
		return err
	}
	rel := strings.TrimPrefix(e.Target, t.Name+"/")
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	var fd int
	var err error
	for range 8 {
		if fd, err = unix.Openat2(t.fd, rel, &how); !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		r.fail(e.Path, fmt.Errorf("hard link to %q: not a file restored before it (%w)", e.Target, err))
		return nil
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return r.local(e.Path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		r.fail(e.Path, fmt.Errorf("hard link to %q, which is not a regular file", e.Target))
		return nil
	}
	if err := unix.Linkat(fd, "", pfd, base, unix.AT_EMPTY_PATH); err != nil {
		return r.local(e.Path, fmt.Errorf("hard link to %q: %w", e.Target, err))
	}
	return nil
}
