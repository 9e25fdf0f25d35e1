package localblob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/blob"
)

// Put writes an object as an unnamed file (O_TMPFILE) in its key's
// directory and links it under the key once written (and synced, unless
// batched): readers see the whole object or none, a crash leaves nothing
// named, and no rename is needed. Renames were the cost: each Put renamed
// a temporary file from .tmp into the key's directory, and the kernel
// serialises renames across directories on a file system (one lock for
// all), so a backup's 32 uploaders queued behind each other, spinning:
// 0.2-0.9 ms of CPU per Put against 0.04-0.12 ms now (BenchmarkPut). A
// Put replacing an object links the file into .tmp and renames it over the
// key; where unnamed files or /proc are missing (probeUnnamed), every Put
// does.
//
// Put works on descriptors: .tmp's, open since New, and those of the
// directories it writes objects into, opened once (beneath the store's
// directory, following no symlink) and kept. The names used with them are
// one path element (a key's last, or a temporary file's), so nothing
// resolves outside the directory.

// maxDirFDs bounds the directories kept open: a backup store has a few
// hundred (chunks/00 to chunks/ff, manifests); past it, a Put opens its
// directory and closes it again.
const maxDirFDs = 512

// dirFDs are the open directories.
type dirFDs struct {
	tmp     int  // .tmp
	unnamed bool // Put writes unnamed files and links them (probeUnnamed)

	mu      sync.Mutex
	open    map[string]int // by key directory ("chunks/ab")
	retired []int          // replaced, maybe in use: closed with the store
}

// close closes them.
func (d *dirFDs) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, fd := range d.open {
		unix.Close(fd)
	}
	for _, fd := range d.retired {
		unix.Close(fd)
	}
	d.open, d.retired = nil, nil
	if d.tmp >= 0 {
		unix.Close(d.tmp)
	}
}

// openDir opens directory dir beneath the store's directory, following no
// symlink on the way.
func (s *Store) openDir(dir string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for try := 1; ; try++ {
		fd, err := unix.Openat2(s.dirfd, dir, &how)
		if (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && try < 16 {
			continue // a rename in the directory meanwhile
		}
		if err != nil {
			return -1, &fs.PathError{Op: "openat2", Path: dir, Err: err}
		}
		return fd, nil
	}
}

// keyDir returns a descriptor of key directory dir (made if missing), and
// whether the caller must close it (it is not kept). stale is a kept
// descriptor that failed as if its directory had been removed behind the
// store's back (-1: none): it is replaced, and closed with the store only,
// as other Puts may be using it.
func (s *Store) keyDir(dir string, stale int) (fd int, owned bool, err error) {
	d := &s.dirs
	d.mu.Lock()
	cur, ok := d.open[dir]
	d.mu.Unlock()
	if ok && cur != stale {
		return cur, false, nil
	}
	if err := s.root.MkdirAll(dir, 0o700); err != nil {
		return -1, false, err
	}
	if fd, err = s.openDir(dir); err != nil {
		return -1, false, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, ok = d.open[dir]
	switch {
	case ok && cur != stale: // another Put opened it meanwhile
		unix.Close(fd)
		return cur, false, nil
	case ok:
		d.retired = append(d.retired, cur)
	case len(d.open) >= maxDirFDs:
		return fd, true, nil
	}
	if d.open == nil {
		d.open = map[string]int{}
	}
	d.open[dir] = fd
	return fd, false, nil
}

// Put implements blob.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) (err error) {
	if err := blob.ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blob put %q: %w", key, err)
	}
	if s.batched {
		if err := s.beginUnsynced(); err != nil {
			return err
		}
		defer s.endUnsynced()
	}
	dir, base := path.Dir(key), path.Base(key)
	dfd, owned, err := s.keyDir(dir, -1)
	if err != nil {
		return classify(fmt.Errorf("blob put %q: %w", key, err))
	}
	if owned {
		defer func() { unix.Close(dfd) }()
	}
	var fd int
	var tmp string // the temporary file's name in .tmp ("": unnamed)
	if s.dirs.unnamed {
		fd, err = unix.Openat(dfd, ".", unix.O_WRONLY|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
		if err != nil && !owned && removed(dfd) { // its directory was removed: again, in a new one
			if dfd, owned, err = s.keyDir(dir, dfd); err == nil {
				fd, err = unix.Openat(dfd, ".", unix.O_WRONLY|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
			}
		}
	} else {
		tmp = tmpName()
		fd, err = unix.Openat(s.dirs.tmp, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	}
	if err != nil {
		return classify(fmt.Errorf("blob put %q: create: %w", key, err))
	}
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
		if err != nil && tmp != "" {
			if rmErr := unix.Unlinkat(s.dirs.tmp, tmp, 0); rmErr != nil && !errors.Is(rmErr, unix.ENOENT) {
				s.log.Warn("blob: cannot remove a temporary file", "file", path.Join(tmpDir, tmp), "err", rmErr)
			}
		}
	}()
	if err := s.fill(ctx, key, fd, r, size); err != nil {
		return err
	}
	if tmp == "" {
		err = linkFD(fd, dfd, base)
		if errors.Is(err, unix.EEXIST) { // replacing an object: named in .tmp, renamed over it
			tmp = tmpName()
			err = linkFD(fd, s.dirs.tmp, tmp)
		} else if err == nil {
			err = unix.Close(fd)
			fd = -1
		}
	}
	if err == nil && tmp != "" {
		err = unix.Close(fd)
		if fd = -1; err == nil {
			err = unix.Renameat(s.dirs.tmp, tmp, dfd, base)
			if err != nil && !owned && removed(dfd) { // as above
				if dfd, owned, err = s.keyDir(dir, dfd); err == nil {
					err = unix.Renameat(s.dirs.tmp, tmp, dfd, base)
				}
			}
		}
	}
	if err != nil {
		return classify(fmt.Errorf("blob put %q: %w", key, err))
	}
	if s.batched {
		return nil // durable at the next Sync
	}
	// The link or rename is durable once the directory is synced.
	if err := unix.Fsync(dfd); err != nil {
		s.log.Warn("blob: cannot sync a directory", "dir", dir, "err", err)
	}
	return nil
}

// fill writes the object's content to fd, and syncs it unless batched.
func (s *Store) fill(ctx context.Context, key string, fd int, r io.Reader, size int64) error {
	src := blob.ContextReader(ctx, r)
	if size >= 0 {
		src = io.LimitReader(src, size+1) // one more, to tell a longer stream
	}
	n, err := io.Copy(fdWriter(fd), src)
	if err != nil {
		return classify(fmt.Errorf("blob put %q: %w", key, err))
	}
	if size >= 0 && n != size {
		return blob.SizeMismatch(key, size, n)
	}
	if !s.batched {
		if err := unix.Fsync(fd); err != nil {
			return classify(fmt.Errorf("blob put %q: sync: %w", key, err))
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blob put %q: %w", key, err)
	}
	return nil
}

// removed reports whether directory dfd was removed.
func removed(dfd int) bool {
	var st unix.Stat_t
	return unix.Fstat(dfd, &st) == nil && st.Nlink == 0
}

// tmpName is a new temporary file's name in .tmp.
func tmpName() string {
	var rnd [12]byte
	rand.Read(rnd[:])
	return hex.EncodeToString(rnd[:])
}

// linkFD gives the unnamed file fd (O_TMPFILE) the name base in directory
// dfd; it fails with EEXIST if the name is taken.
func linkFD(fd, dfd int, base string) error {
	return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), dfd, base, unix.AT_SYMLINK_FOLLOW)
}

// probeUnnamed reports whether Put can write unnamed files and link them
// (O_TMPFILE, and /proc to link them through), trying it in .tmp.
func (s *Store) probeUnnamed() bool {
	fd, err := unix.Openat(s.dirs.tmp, ".", unix.O_WRONLY|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	name := tmpName()
	if err := linkFD(fd, s.dirs.tmp, name); err != nil {
		return false
	}
	unix.Unlinkat(s.dirs.tmp, name, 0)
	return true
}

// fdWriter writes to a file descriptor (an os.File would register a
// regular file with the poller, one more failing system call per Put).
type fdWriter int

func (w fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Write(int(w), p[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, &fs.PathError{Op: "write", Path: "temporary file", Err: err}
		}
		n += m
	}
	return n, nil
}
