// Package localblob is a blob.Store on a local directory: each object is a
// file at its key's path under the directory.
//
// Every access goes through an os.Root opened on the directory, or
// descriptors of directories opened beneath it without following a
// symlink, so no key and no symlink planted in the directory (by anyone who
// can write there) leads outside it. Put writes the object as an unnamed
// file, syncs it, links it under the key and syncs the directory (an object
// replaced: linked in .tmp/ and renamed over it; put.go): a reader sees the
// old object or the new one, never part of one, even across a crash.
//
// With BatchedSync (what backups use) Put skips both fsyncs (it still
// links a whole file: readers never see part of an object) and Sync makes
// everything Put before it durable with one syncfs(2) of the directory's
// file system. Until Sync, a crash may leave recent objects empty or
// partial; backups call Sync before writing the manifest that names them.
// A durable marker records that this can have happened (unsynced.go:
// CrashedWrites, ClearCrashed), so that readers need to verify objects
// only after such a crash.
//
// A key cannot be both an object and the directory of other objects ("a"
// and "a/b"); such a Put fails with FailedPrecondition. Backups use a fixed
// layout in which this never happens; S3 gateways on a file system (such
// as versitygw's posix backend) have the same rule.
package localblob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/errdefs"
)

// tmpDir holds Puts in progress; its name is not a valid key segment, so
// it never appears in List.
const tmpDir = ".tmp"

// staleTmp is how old a temporary file must be for New to remove it as the
// leftover of a crashed Put.
const staleTmp = time.Hour

// Store is a blob.Store on a directory.
type Store struct {
	root    *os.Root
	dirfd   int  // the directory (O_PATH), for openBeneath
	tmpfd   int  // .tmp (put.go), -1 once closed
	unnamed bool // Put writes unnamed files and links them (probeUnnamed)
	// atimeNeeded: objects cannot be opened with O_NOATIME (not their
	// owner), so reads update their access times.
	atimeNeeded atomic.Bool
	closing     sync.RWMutex // Close waits for the Puts using tmpfd
	closeOnce   sync.Once
	dir         string
	log         *slog.Logger
	batched     bool   // no fsync per object: Sync makes them durable
	scope       string // of the crash markers (BatchedSync)

	syncFD *os.File // the directory, open since New: Sync's syncfs sees every write-back error since

	mu       sync.Mutex // guards the crash markers' state (unsynced.go)
	markers  []string   // this Store's markers under unsyncedDir
	markedAt time.Time  // when the last one was made
	puts     uint64     // unsynced Puts started
	inflight int        // unsynced Puts not returned
}

var (
	_ blob.Store  = (*Store)(nil)
	_ blob.Syncer = (*Store)(nil)
)

// Option configures a Store.
type Option func(*Store)

// BatchedSync makes Put skip its fsyncs of the object and its directory
// (one write, one rename): durability comes from Sync, one syncfs(2) for
// any number of objects. Backups store tens of thousands of chunks and
// sync once before their manifest; the per-object fsyncs dominated a full
// backup's time. scope names whose objects this Store writes (a backup
// key's id: letters and digits), for the crash markers (unsynced.go).
func BatchedSync(scope string) Option {
	return func(s *Store) { s.batched, s.scope = true, scope }
}

// New opens (creating it, mode 0700, when missing) the directory dir as a
// store, and removes temporary files that crashed Puts left behind.
func New(dir string, log *slog.Logger, opts ...Option) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, classify(fmt.Errorf("blob directory: %w", err))
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, classify(fmt.Errorf("blob directory: %w", err))
	}
	dirfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		root.Close()
		return nil, classify(fmt.Errorf("blob directory: %w", err))
	}
	s := &Store{root: root, dirfd: dirfd, dir: dir, log: log, tmpfd: -1}
	if err := s.setUp(opts); err != nil {
		s.closeTmp()
		root.Close()
		unix.Close(dirfd)
		return nil, err
	}
	s.removeStale()
	s.recoverQuarantined()
	return s, nil
}

// setUp applies opts and makes the store's own directories and descriptor.
func (s *Store) setUp(opts []Option) (err error) {
	for _, o := range opts {
		o(s)
	}
	if s.batched && !validScope(s.scope) {
		return errdefs.InvalidArgument(fmt.Errorf("blob directory %s: batched sync scope %q: want 1 to 64 letters and digits", s.dir, s.scope))
	}
	for _, d := range []string{tmpDir, unsyncedDir, quarantineDir} {
		if err := s.root.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return classify(fmt.Errorf("blob directory %s: %w", s.dir, err))
		}
	}
	if s.tmpfd, err = s.openDir(tmpDir); err != nil {
		return classify(fmt.Errorf("blob directory %s: %w", s.dir, err))
	}
	s.unnamed = s.probeUnnamed()
	// syncfs(2) reports the write-back errors of the file system since
	// the descriptor it is given was opened: one opened for each Sync
	// would miss an error another process saw first.
	if s.syncFD, err = s.root.Open("."); err != nil {
		return classify(fmt.Errorf("blob directory %s: %w", s.dir, err))
	}
	return nil
}

// Close releases the directory (once Puts in flight return); it may be
// called again.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closeTmp()
		unix.Close(s.dirfd)
		s.syncFD.Close()
		err = s.root.Close()
	})
	return err
}

// closeTmp closes .tmp's descriptor, once.
func (s *Store) closeTmp() {
	s.closing.Lock()
	defer s.closing.Unlock()
	if s.tmpfd >= 0 {
		unix.Close(s.tmpfd)
		s.tmpfd = -1
	}
}

func (s *Store) removeStale() {
	entries, err := fs.ReadDir(s.root.FS(), tmpDir)
	if err != nil {
		s.log.Warn("blob: cannot list temporary files", "dir", s.dir, "err", err)
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < staleTmp {
			continue
		}
		if err := s.root.Remove(path.Join(tmpDir, e.Name())); err != nil {
			s.log.Warn("blob: cannot remove a stale temporary file", "file", e.Name(), "err", err)
		} else {
			s.log.Info("blob: removed the temporary file of an interrupted put", "file", e.Name())
		}
	}
}

// Sync implements blob.Syncer: every object Put before it is durable when
// it returns (syncfs(2) of the file system holding the directory, which
// also commits the renames). Without BatchedSync it has nothing to do but
// costs no more than one syncfs.
func (s *Store) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blob sync: %w", err)
	}
	puts, busy := s.syncStarted()
	if err := unix.Syncfs(int(s.syncFD.Fd())); err != nil {
		return classify(fmt.Errorf("blob sync %s: %w", s.dir, err))
	}
	s.afterSync(puts, busy)
	return nil
}

// Get implements blob.Store.
func (s *Store) Get(ctx context.Context, key string, rng blob.Range) (io.ReadCloser, error) {
	if err := blob.ValidateKey(key); err != nil {
		return nil, err
	}
	if err := rng.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("blob get %q: %w", key, err)
	}
	f, info, err := s.open(key)
	if err != nil {
		return nil, err
	}
	if rng.IsWhole() {
		return readCloser{blob.ContextReader(ctx, f), f}, nil
	}
	if rng.Offset >= info.Size() {
		f.Close()
		return nil, fmt.Errorf("blob get %q: bytes %d- of %d: %w", key, rng.Offset, info.Size(), blob.ErrRangeNotSatisfiable)
	}
	if _, err := f.Seek(rng.Offset, io.SeekStart); err != nil {
		f.Close()
		return nil, classify(fmt.Errorf("blob get %q: %w", key, err))
	}
	length := info.Size() - rng.Offset
	if rng.Length > 0 {
		length = min(length, rng.Length)
	}
	return readCloser{blob.ContextReader(ctx, io.LimitReader(f, length)), f}, nil
}

// readCloser reads from a reader over the file it closes; reads fail once
// the Get's context is done.
type readCloser struct {
	io.Reader
	io.Closer
}

// open opens the regular file of key; anything else is not an object.
func (s *Store) open(key string) (*os.File, os.FileInfo, error) {
	f, err := s.openBeneath(key)
	if err != nil {
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, classify(fmt.Errorf("blob get %q: %w", key, err))
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, blob.NotFound(key)
	}
	return f, info, nil
}

// openBeneath opens key for reading in one openat2(2) that resolves it
// beneath the directory without following any symlink (of the object or
// of a directory on the way): a symlink planted in the directory is
// refused, never followed.
func (s *Store) openBeneath(key string) (*os.File, error) {
	flags := uint64(unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC)
	if !s.atimeNeeded.Load() {
		flags |= unix.O_NOATIME
	}
	fd, err := s.openat2Beneath(key, flags)
	if errors.Is(err, unix.EPERM) && flags&unix.O_NOATIME != 0 {
		// Not the objects' owner (nor CAP_FOWNER): reads update their
		// access times.
		s.atimeNeeded.Store(true)
		fd, err = s.openat2Beneath(key, flags&^unix.O_NOATIME)
	}
	switch {
	case err == nil:
		return os.NewFile(uintptr(fd), path.Join(s.dir, key)), nil
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
		return nil, errdefs.PermissionDenied(fmt.Errorf("blob get %q: refused: a symbolic link, not an object", key))
	}
	return nil, classifyKey(key, "get", err)
}

// openat2Beneath opens rel (with flags) in one openat2(2) that resolves it
// beneath the store's directory without following any symlink, trying
// again when a rename in the directory meanwhile made it fail.
func (s *Store) openat2Beneath(rel string, flags uint64) (int, error) {
	how := unix.OpenHow{
		Flags:   flags,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for try := 1; ; try++ {
		fd, err := unix.Openat2(s.dirfd, rel, &how)
		if (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && try < 16 {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "openat2", Path: rel, Err: err}
		}
		return fd, nil
	}
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, key string) (blob.Info, error) {
	if err := blob.ValidateKey(key); err != nil {
		return blob.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return blob.Info{}, fmt.Errorf("blob stat %q: %w", key, err)
	}
	info, err := s.root.Lstat(key)
	if err != nil {
		return blob.Info{}, classifyKey(key, "stat", err)
	}
	if !info.Mode().IsRegular() {
		return blob.Info{}, blob.NotFound(key)
	}
	return blob.Info{Key: key, Size: info.Size(), ModTime: info.ModTime()}, nil
}

// Delete implements blob.Store. Directories left empty stay: removing them
// would race with a Put into them.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := blob.ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blob delete %q: %w", key, err)
	}
	info, err := s.root.Lstat(key)
	if err != nil {
		if err := classifyKey(key, "delete", err); !blob.IsNotFound(err) {
			return err
		}
		return nil
	}
	if info.IsDir() {
		return nil // not an object
	}
	if err := s.root.Remove(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return classify(fmt.Errorf("blob delete %q: %w", key, err))
	}
	return nil
}

// classifyKey is classify for an error about key, where a missing file
// (or a file where a directory was expected) means a missing object.
func classifyKey(key, op string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return blob.NotFound(key)
	}
	var errno syscall.Errno
	var pathErr *fs.PathError
	if !errors.As(err, &errno) && errors.As(err, &pathErr) {
		// os.Root's refusal of a path that leads out of the directory
		// (a symlink planted in it), which has no errno.
		return errdefs.PermissionDenied(fmt.Errorf("blob %s %q: refused: %w", op, key, err))
	}
	return classify(fmt.Errorf("blob %s %q: %w", op, key, err))
}

// classify gives err the category of its system error.
func classify(err error) error {
	var errno syscall.Errno
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case !errors.As(err, &errno):
		return err
	}
	switch errno {
	case syscall.ENOSPC, syscall.EDQUOT:
		return errdefs.ResourceExhausted(fmt.Errorf("%w (the disk holding the blob directory is full)", err))
	case syscall.EACCES, syscall.EPERM:
		return errdefs.PermissionDenied(err)
	case syscall.ENOENT:
		return errdefs.NotFound(err)
	case syscall.ENOTDIR, syscall.EEXIST, syscall.EISDIR, syscall.ENOTEMPTY:
		return errdefs.FailedPrecondition(fmt.Errorf("%w (a key cannot be both an object and the directory of others)", err))
	case syscall.EROFS:
		return errdefs.FailedPrecondition(err)
	case syscall.EIO:
		return errdefs.Unavailable(err)
	}
	return err
}
