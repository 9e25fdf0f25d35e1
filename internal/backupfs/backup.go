package backupfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/confine"
)

// openFile opens a regular file entry for reading (a test counts or fails
// the opens through it).
var openFile = func(e *confine.Entry) (*os.File, error) { return e.Open() }

// parentMode is the mode of the directory entries recorded for the
// parents of nested tree names (owned by root, time 0).
const parentMode = 0o755

// progressEvery is the least time between two Progress calls.
const progressEvery = 250 * time.Millisecond

// Backup walks sources (each under its Name; they are taken in backup path
// order whatever the order given) into w. Every tree is walked; w is
// committed when something changed or there is no Previous. With a
// Previous and nothing different, Backup returns Changed=false without
// committing (the caller reports "skipped: nothing changed" and may drop
// w). A file whose size, mtime, ctime and inode equal its previous entry's
// reuses its chunks without being read; a file read again whose content
// and metadata turn out the same does not count as a change (a chmod to
// the same mode, say).
//
// Sockets, fifos and devices (other than an Overlay source's whiteouts)
// are skipped and listed, as is anything replaced while being read; an
// error of the trees' file system or of the store fails the backup.
func Backup(ctx context.Context, w *backuprepo.Writer, sources []Source, opts BackupOptions) (BackupResult, error) {
	if err := opts.Map.validate(); err != nil {
		return BackupResult{}, err
	}
	names := make([]string, len(sources))
	for i, s := range sources {
		names[i] = s.Name
	}
	if err := checkNames(names); err != nil {
		return BackupResult{}, err
	}
	srcs := slices.Clone(sources)
	slices.SortFunc(srcs, func(a, b Source) int { return backuprepo.ComparePaths(a.Name, b.Name) })
	// The walk and the workers reading ahead (backup_ahead.go) stop at the
	// first error of either.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	b := &backuper{ctx: ctx, cancel: cancel, w: w, opts: opts, parents: map[string]bool{}, log: opts.Log}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if opts.Previous != nil {
		pa := readPrevAhead(ctx, opts.Previous)
		defer pa.stop()
		b.prev = pa
	} else {
		b.changed = true
	}
	if err := b.walk(srcs); err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = cause // a worker's error, or the caller's cancel
		}
		cancel(err)
		b.stopWorkers()
		// Nothing of this backup is being stored once it returns.
		w.Wait()
		return b.res, err
	}
	b.drain()
	b.res.Changed = b.changed
	b.report(true)
	if !b.changed {
		return b.res, nil
	}
	// Under garbage collection's protocol: refused (backuprepo.ErrSwept,
	// retryable) when a sweep ran while the backup was taken.
	sum, err := w.CommitGCSafe(ctx)
	if err != nil {
		return b.res, fmt.Errorf("commit backup: %w", err)
	}
	b.res.Summary = sum
	return b.res, nil
}

// walk backs up every source, each tree's files read ahead, every entry
// added once it returns.
func (b *backuper) walk(srcs []Source) error {
	defer b.stopWorkers()
	for _, s := range srcs {
		if err := b.source(s); err != nil {
			return err
		}
	}
	return nil
}

// prefetchWorkers is how many goroutines read a tree's metadata ahead of
// an incremental backup's walk (0: none; a test compares both).
var prefetchWorkers = 4

type devIno struct {
	dev uint64
	ino uint64
}

type backuper struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	w      *backuprepo.Writer
	opts   BackupOptions
	log    *slog.Logger
	res    BackupResult

	prev    entryReader       // the previous backup's entries; nil once read to its end
	cur     *backuprepo.Entry // the previous backup's next entry
	changed bool

	parents map[string]bool   // synthetic parents of nested names, added
	links   map[devIno]string // this tree's multiply linked files: first path
	src     Source
	ah      ahead // files read ahead, entries waiting for them

	progress     Progress
	lastProgress time.Time
}

// differ marks the backup changed, logging the first difference.
func (b *backuper) differ(format string, args ...any) {
	if !b.changed {
		b.log.Debug("backup differs from the previous one", "what", fmt.Sprintf(format, args...))
	}
	b.changed = true
}

// prevFor returns the previous backup's entry for p (nil if none). Calls
// come in walk order; entries of the previous backup passed over were
// deleted since.
func (b *backuper) prevFor(p string) *backuprepo.Entry {
	for {
		if b.cur == nil {
			if b.prev == nil {
				return nil
			}
			e, err := b.prev.Next()
			if err != nil {
				if err != io.EOF {
					b.log.Warn("previous backup unreadable: files are read again", "err", err)
					b.differ("previous backup unreadable")
				}
				b.prev = nil
				return nil
			}
			b.cur = e
		}
		switch c := backuprepo.ComparePaths(b.cur.Path, p); {
		case c == 0:
			e := b.cur
			b.cur = nil
			return e
		case c > 0:
			return nil
		}
		b.differ("%q removed", b.cur.Path)
		b.cur = nil
	}
}

// drain reads the previous backup to its end: what it has beyond the last
// tree was deleted.
func (b *backuper) drain() {
	for b.cur != nil || b.prev != nil {
		if b.cur != nil {
			b.differ("%q removed", b.cur.Path)
			b.cur = nil
		}
		if b.prev == nil {
			return
		}
		e, err := b.prev.Next()
		if err != nil {
			if err != io.EOF {
				b.log.Warn("previous backup unreadable", "err", err)
				b.differ("previous backup unreadable")
			}
			b.prev = nil
			return
		}
		b.cur = e
	}
}

// add adds e, comparing it with its previous entry.
func (b *backuper) add(e backuprepo.Entry, prev *backuprepo.Entry) error {
	if prev == nil {
		b.differ("%q added", e.Path)
	} else if !sameEntry(&e, prev) {
		b.differ("%q changed", e.Path)
	}
	if err := b.w.Add(b.ctx, e); err != nil {
		return fmt.Errorf("back up %q: %w", e.Path, err)
	}
	return nil
}

// sameEntry reports whether two entries restore the same (ctime and inode
// are not restored).
func sameEntry(a, b *backuprepo.Entry) bool {
	return a.Type == b.Type && a.Mode == b.Mode && a.UID == b.UID && a.GID == b.GID &&
		a.Mtime == b.Mtime && a.Size == b.Size && a.Target == b.Target && a.Opaque == b.Opaque &&
		maps.EqualFunc(a.Xattrs, b.Xattrs, bytes.Equal) && slices.Equal(a.Chunks, b.Chunks)
}

func (b *backuper) skip(p, why string) {
	b.res.SkippedCount++
	if len(b.res.Skipped) < MaxListed {
		b.res.Skipped = append(b.res.Skipped, p+": "+why)
	}
	b.log.Info("not backed up", "path", p, "why", why)
}

func (b *backuper) report(final bool) {
	if b.opts.Progress == nil {
		return
	}
	if now := time.Now(); final || now.Sub(b.lastProgress) >= progressEvery {
		b.lastProgress = now
		b.opts.Progress(b.progress)
	}
}

// source walks one tree under its name.
func (b *backuper) source(s Source) error {
	// Parents of a nested name ("svc", "svc/db" for "svc/db/upper").
	for i := range len(s.Name) {
		if s.Name[i] != '/' || b.parents[s.Name[:i]] {
			continue
		}
		p := s.Name[:i]
		b.parents[p] = true
		if err := b.submit(&pending{e: backuprepo.Entry{Path: p, Type: backuprepo.TypeDir, Mode: parentMode}, prev: b.prevFor(p)}); err != nil {
			return err
		}
	}
	dir, err := confine.OpenDir(s.Dir)
	if err != nil {
		return fmt.Errorf("back up %s: %w", s.Name, err)
	}
	defer dir.Close()
	stopPrefetch := func() {}
	if b.opts.Previous != nil && prefetchWorkers > 0 {
		// An incremental backup reads little but walks everything: its
		// time is the walk's, which finds the tree's metadata in memory
		// when prefetched on a few goroutines (confine.Prefetch).
		stopPrefetch = confine.Prefetch(b.ctx, dir, prefetchWorkers)
	}
	b.src, b.links = s, map[devIno]string{}
	err = confine.Walk(b.ctx, dir, b.visit, nil)
	stopPrefetch()
	if err == nil {
		// Every file of this tree read and added before the next tree
		// (its hard links are this tree's).
		err = b.flushAhead()
	}
	if err != nil {
		return fmt.Errorf("back up %s (%s): %w", s.Name, s.Dir, err)
	}
	return nil
}

func (b *backuper) visit(ce *confine.Entry) error {
	p := b.src.Name
	if ce.Rel != "." {
		p += "/" + ce.Rel
	}
	st := &ce.Stat
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if len(p) > backuprepo.MaxPathLen {
		b.skip(p[:200]+"…", "path longer than the backup keeps")
		if isDir {
			return confine.SkipDir
		}
		return nil
	}
	e := backuprepo.Entry{Path: p, Mode: st.Mode & 0o7777, Mtime: st.Mtim.Nano()}
	uid, uok := b.opts.Map.inside(st.Uid, b.opts.Map.HostUID)
	gid, gok := b.opts.Map.inside(st.Gid, b.opts.Map.HostGID)
	e.UID, e.GID = uid, gid
	// overlayfs makes whiteouts as its mounter (host root): their owner
	// means nothing, they are stored as root's.
	if whiteoutDev := st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 && b.src.Overlay; whiteoutDev {
		e.UID, e.GID = 0, 0
	} else if !uok || !gok {
		b.res.Overflow++
		b.log.Debug("owner outside the environment's range", "path", p, "uid", st.Uid, "gid", st.Gid)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		e.Type = backuprepo.TypeDir
	case unix.S_IFREG:
		e.Type = backuprepo.TypeFile
	case unix.S_IFLNK:
		t, err := ce.Readlink()
		if err != nil {
			return b.vanished(p, err)
		}
		if t == "" || len(t) > backuprepo.MaxPathLen {
			b.skip(p, "symlink target too long")
			return nil
		}
		e.Type, e.Target = backuprepo.TypeSymlink, t
	case unix.S_IFCHR:
		if !b.src.Overlay || st.Rdev != 0 {
			b.skip(p, "character device")
			return nil
		}
		e.Type, e.Mode = backuprepo.TypeWhiteout, e.Mode&0o777
	case unix.S_IFBLK:
		b.skip(p, "block device")
		return nil
	case unix.S_IFIFO:
		b.skip(p, "fifo")
		return nil
	case unix.S_IFSOCK:
		b.skip(p, "socket")
		return nil
	default:
		b.skip(p, fmt.Sprintf("file type %#o", st.Mode&unix.S_IFMT))
		return nil
	}
	if e.Type == backuprepo.TypeFile {
		return b.regular(ce, e)
	}
	if _, err := b.xattrs(ce, &e); err != nil {
		return b.vanished(p, err)
	}
	if e.Type == backuprepo.TypeDir && ce.Depth >= confine.MaxDepth {
		if err := b.submit(&pending{e: e, prev: b.prevFor(p)}); err != nil {
			return err
		}
		b.skip(p, fmt.Sprintf("contents nested deeper than %d directories", confine.MaxDepth))
		return confine.SkipDir
	}
	return b.submit(&pending{e: e, prev: b.prevFor(p)})
}

// regular backs up a regular file: an overlay whiteout, or a file. A file
// unchanged since the previous backup (backuprepo.Unchanged: size, mtime,
// ctime, inode) keeps its previous attributes without listing them:
// setting or removing one changes the file's ctime.
func (b *backuper) regular(ce *confine.Entry, e backuprepo.Entry) error {
	prev := b.prevFor(e.Path)
	if backuprepo.Unchanged(prev, statOf(&ce.Stat)) {
		e.Xattrs = prev.Xattrs
		return b.file(ce, e, prev)
	}
	if ce.Stat.Nlink > 1 {
		if _, ok := b.links[devIno{dev: ce.Stat.Dev, ino: ce.Stat.Ino}]; ok {
			return b.file(ce, e, prev) // another name of a file backed up: a link, its attributes are the file's
		}
	}
	whiteout, err := b.xattrs(ce, &e)
	if err != nil {
		if prev != nil {
			// Its previous entry was taken: removed or replaced, the
			// file leaves the backup changed.
			b.differ("%q removed or replaced", e.Path)
		}
		return b.vanished(e.Path, err)
	}
	if whiteout {
		e.Type, e.Mode, e.Xattrs, e.Opaque = backuprepo.TypeWhiteout, e.Mode&0o777, nil, false
		return b.submit(&pending{e: e, prev: prev})
	}
	return b.file(ce, e, prev)
}

// vanished handles an entry that could not be read as listed: removed
// since (left out: it is not in the tree any more), replaced (skipped and
// listed), or a real error.
func (b *backuper) vanished(p string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR), strings.Contains(err.Error(), "replaced while being read"):
		b.skip(p, "replaced while being read")
		return nil
	}
	return err
}
