package backupfs

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/errdefs"
)

// A restore writes files' content in parallel. The walk (one goroutine,
// manifest order) creates each file under a temporary name in its
// directory and queues its chunks as tasks; workers fetch, open (verify,
// decrypt, decompress) and write them at their offsets, several chunks of
// one file or of several files at once. The worker that finishes a file's
// last chunk sets its metadata and renames it into place (or removes it
// when a chunk failed). A directory stays open until the walk has left it
// and its last file is renamed; then its times are set (a rename in it
// would move them) and it is closed.
//
// On a store with 10–30 ms per request (S3) the chunks in flight are
// what makes a restore of many small files take seconds rather than
// minutes; on a local disk they overlap reads, writes and the CPU's work.

const (
	// DefaultRestoreWorkers is how many chunks a restore fetches and
	// writes at once unless RestoreOptions.Workers says otherwise: many,
	// as most chunks are small files' (their reads from disk or S3 are
	// what a restore waits for), within restoreBytesInFlight.
	DefaultRestoreWorkers = 32
	// maxRestoreWorkers bounds RestoreOptions.Workers.
	maxRestoreWorkers = 64
	// maxFilesInFlight bounds the files being written at once (each holds
	// a descriptor, and its directory's).
	maxFilesInFlight = 128
)

// restoreBytesInFlight bounds the plaintext bytes of the chunks being
// fetched and written at once (8 chunks of the largest size). Each chunk
// in flight also holds its sealed object and its decrypted form until it
// is opened, so a restore's chunks take at most about three times this,
// 96 MiB, whatever the number of workers (a test lowers it).
var restoreBytesInFlight int64 = 8 * backuprepo.MaxChunkSize

// pool is what the walk shares with the workers.
type pool struct {
	wctx   context.Context // cancelled to stop the workers
	cancel context.CancelFunc
	tasks  chan chunkTask
	slots  chan struct{}       // a value per file in flight
	budget *semaphore.Weighted // restoreBytesInFlight
	wg     sync.WaitGroup

	overflow atomic.Int64 // RestoreResult.Overflow

	mu      sync.Mutex
	fatal   error               // what stopped the restore, if anything
	pending map[*fileJob]string // files in flight, by path
}

// dirRef is a directory restored: open while the walk is in it and while
// a file in it is being written.
type dirRef struct {
	path  string
	fd    int
	mtime int64
	seq   int64
	refs  atomic.Int32 // the walk's, and one per file in flight
}

// fileJob is a file being written.
type fileJob struct {
	e     *backuprepo.Entry
	t     *target
	dir   *dirRef
	tmp   string
	fd    int
	seq   int64
	left  atomic.Int32 // tasks not done, and one for the walk
	zeros atomic.Bool  // a chunk of zeros was left as a hole: truncate
	err   atomic.Pointer[error]
	done  chan struct{} // closed once renamed into place or removed
}

// chunkTask is count copies, back to back from off, of a file's chunk
// (the first of them its index-th).
type chunkTask struct {
	job   *fileJob
	ref   backuprepo.ChunkRef
	index int
	off   int64
	count int
}

func (r *restorer) start() {
	n := r.opts.Workers
	if n <= 0 {
		n = DefaultRestoreWorkers
	}
	n = min(n, maxRestoreWorkers)
	r.wctx, r.cancel = context.WithCancel(r.ctx)
	r.tasks = make(chan chunkTask, n)
	r.slots = make(chan struct{}, maxFilesInFlight)
	r.budget = semaphore.NewWeighted(max(restoreBytesInFlight, backuprepo.MaxChunkSize))
	r.pending = map[*fileJob]string{}
	r.wg.Add(n)
	for range n {
		go r.work()
	}
}

// wait stops the walk's side: it leaves every directory, lets the workers
// finish what was queued (or drop it, when stopped) and waits for them.
func (r *restorer) wait() {
	r.popTo("")
	close(r.tasks)
	r.wg.Wait()
	r.cancel()
}

// stop stops the restore with err (the first error wins).
func (r *restorer) stop(err error) {
	r.mu.Lock()
	if r.fatal == nil {
		r.fatal = err
	}
	r.mu.Unlock()
	r.cancel()
}

// stopped returns what stopped the restore: an error of the walk or of a
// worker, or the caller's context's; nil when it was not stopped.
func (r *restorer) stopped() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fatal != nil {
		return r.fatal
	}
	return r.ctx.Err()
}

// newDir opens dirRef for a directory the walk entered (fd is its).
func (r *restorer) newDir(e *backuprepo.Entry, fd int) *dirRef {
	d := &dirRef{path: e.Path, fd: fd, mtime: e.Mtime, seq: r.walkSeq}
	d.refs.Store(1)
	return d
}

// release drops a hold on d; the last sets its times (unless the restore
// was stopped) and closes it.
func (r *restorer) release(d *dirRef) {
	if d.refs.Add(-1) != 0 {
		return
	}
	if r.wctx.Err() == nil {
		if err := setTimes(d.fd, -1, "", d.mtime); err != nil {
			if err := r.localAt(d.seq, d.path, fmt.Errorf("set times: %w", err)); err != nil {
				r.stop(err)
			}
		}
	}
	unix.Close(d.fd)
}

// waitFiles waits until no file in flight matches.
func (r *restorer) waitFiles(match func(*fileJob) bool) error {
	r.mu.Lock()
	var wait []*fileJob
	for j := range r.pending {
		if match(j) {
			wait = append(wait, j)
		}
	}
	r.mu.Unlock()
	for _, j := range wait {
		<-j.done // the workers finish or drop every task, stopped or not
	}
	if r.wctx.Err() != nil {
		return r.stopped()
	}
	return nil
}

// file creates a file's temporary in directory d and queues its chunks.
func (r *restorer) file(e *backuprepo.Entry, t *target, d *dirRef, base string) error {
	select {
	case r.slots <- struct{}{}:
	case <-r.wctx.Done():
		return r.stopped()
	}
	fd, tmp, err := r.createTemp(d.fd, base)
	if err != nil {
		<-r.slots
		return r.local(e.Path, fmt.Errorf("create: %w", err))
	}
	j := &fileJob{e: e, t: t, dir: d, tmp: tmp, fd: fd, seq: r.walkSeq, done: make(chan struct{})}
	d.refs.Add(1)
	r.mu.Lock()
	r.pending[j] = e.Path
	r.mu.Unlock()
	var tasks int32
	for i := 0; i < len(e.Chunks); i++ {
		if i == 0 || e.Chunks[i] != e.Chunks[i-1] {
			tasks++
		}
	}
	j.left.Store(tasks + 1)
	var off int64
	queued := int32(0)
queue:
	for i := 0; i < len(e.Chunks); {
		ref, n := e.Chunks[i], 1
		for i+n < len(e.Chunks) && e.Chunks[i+n] == ref {
			n++
		}
		select {
		case r.tasks <- chunkTask{job: j, ref: ref, index: i, off: off, count: n}:
			queued++
		case <-r.wctx.Done():
			break queue
		}
		off += int64(n) * int64(ref.Size)
		i += n
	}
	if j.left.Add(-(tasks - queued + 1)) == 0 {
		r.finish(j)
	}
	if r.wctx.Err() != nil {
		return r.stopped()
	}
	return nil
}

// createTemp creates a new file under a temporary name in directory pfd
// (never base itself, nor a name there already).
func (r *restorer) createTemp(pfd int, base string) (int, string, error) {
	for {
		r.seq++
		tmp := fmt.Sprintf("%s%d", tmpPrefix, r.seq)
		if tmp == base {
			continue
		}
		fd, err := unix.Openat(pfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue // a name the backup restored
		}
		return fd, tmp, err
	}
}

func (r *restorer) work() {
	defer r.wg.Done()
	for tk := range r.tasks {
		j := tk.job
		if j.err.Load() == nil && r.wctx.Err() == nil {
			if err := r.writeChunk(tk); err != nil {
				j.err.CompareAndSwap(nil, &err)
			}
		}
		if j.left.Add(-1) == 0 {
			r.finish(j)
		}
	}
}

// writeChunk fetches and opens a chunk and writes it where it goes; a
// chunk of zeros is left as a hole.
func (r *restorer) writeChunk(tk chunkTask) error {
	e := tk.job.e
	if err := r.budget.Acquire(r.wctx, int64(tk.ref.Size)); err != nil {
		return err // stopped
	}
	defer r.budget.Release(int64(tk.ref.Size))
	data, err := r.repo.GetChunk(r.wctx, tk.ref)
	if err != nil {
		return fmt.Errorf("restore %q: chunk %d of %d: %w", e.Path, tk.index+1, len(e.Chunks), err)
	}
	if allZero(data) {
		tk.job.zeros.Store(true)
		return nil
	}
	for k := range tk.count {
		off := tk.off + int64(k)*int64(len(data))
		for b := data; len(b) > 0; {
			n, err := unix.Pwrite(tk.job.fd, b, off)
			if err != nil {
				return fmt.Errorf("restore %q: %w", e.Path, err)
			}
			b, off = b[n:], off+int64(n)
		}
	}
	return nil
}

// finish sets a file's metadata and renames it into place once all its
// chunks are written, or removes it (and lists it, unless the restore was
// stopped).
func (r *restorer) finish(j *fileJob) {
	e, pfd := j.e, j.dir.fd
	var err error
	if p := j.err.Load(); p != nil {
		err = *p
	}
	local := false
	if err == nil && j.zeros.Load() {
		if err = unix.Ftruncate(j.fd, e.Size); err != nil {
			err, local = fmt.Errorf("restore %q: %w", e.Path, err), true
		}
	}
	if err == nil {
		if err = r.meta(e, j.t, j.fd, -1, ""); err != nil {
			local = true
		}
	}
	if cerr := unix.Close(j.fd); err == nil && cerr != nil {
		err, local = fmt.Errorf("restore %q: %w", e.Path, cerr), true
	}
	if err == nil && r.wctx.Err() != nil {
		err = r.wctx.Err()
	}
	if err == nil {
		if err = unix.Renameat2(pfd, j.tmp, pfd, path.Base(e.Path), unix.RENAME_NOREPLACE); err != nil {
			err, local = fmt.Errorf("rename into place: %w", err), true
		}
	}
	if err != nil {
		if uerr := unix.Unlinkat(pfd, j.tmp, 0); uerr != nil && !errors.Is(uerr, unix.ENOENT) {
			r.log.Warn("remove a file not restored", "path", e.Path, "err", uerr)
		}
		if r.wctx.Err() == nil {
			var stop error
			if local {
				stop = r.localAt(j.seq, e.Path, err)
			} else {
				stop = r.content(j.seq, e.Path, err)
			}
			if stop != nil {
				r.stop(stop)
			}
		}
	}
	r.mu.Lock()
	if err == nil {
		r.res.Files++
		r.res.Bytes += e.Size
		r.progress.Files++
		r.progress.Bytes += e.Size
		r.report(false)
	}
	delete(r.pending, j)
	r.mu.Unlock()
	close(j.done)
	<-r.slots
	r.release(j.dir)
}

// content handles an error restoring a file's content: a chunk missing,
// corrupt or refused lists the file; a full disk, a failing one or the
// store out of reach stops the restore.
func (r *restorer) content(seq int64, p string, err error) error {
	switch {
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT), errors.Is(err, unix.EIO), errors.Is(err, unix.EROFS):
		return r.localAt(seq, p, err)
	case r.ctx.Err() != nil:
		return r.ctx.Err()
	case backuprepo.IsCorrupt(err), errdefs.Is(err, errdefs.CategoryNotFound),
		errdefs.Is(err, errdefs.CategoryFailedPrecondition), errdefs.Is(err, errdefs.CategoryInvalidArgument):
		r.failAt(seq, p, err)
		return nil
	}
	return fmt.Errorf("restore stopped: %w", err)
}

// tmpPrefix starts the name a file is written under until it is whole.
const tmpPrefix = ".cove-restore-"

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
