package backupfs

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/errdefs"
)

// A restore writes files' content in parallel. The walk (one goroutine,
// manifest order) creates each file in its directory and queues its
// chunks as tasks; fetchers read them from the store, many at once, and
// hand them to openers, one per CPU, which open them (verify, decrypt,
// decompress) and write them at their offsets, several chunks of one file
// or of several files at once. Apart, fetching never waits for a CPU:
// with every worker both fetching and opening, the workers queued for a
// CPU left the disk (or S3) with one read in flight, and a restore of
// small files took twice as long. The worker that finishes a file's last chunk sets its
// metadata, or removes the file when a chunk failed, so no name is left
// on a file that is not whole once Restore returns. A directory stays open
// until the walk has left it and its last file is done; then its times are
// set (a file removed in it would move them) and it is closed.
//
// Files are created under their own names, not under a temporary renamed
// into place: a rename per file was a tenth of a restore's CPU, and a
// target is new and empty, seen by nothing until the restore is done (the
// runner's restore step removes what a restore killed half-way wrote).
//
// On a store with 10–30 ms per request (S3) the chunks in flight are
// what makes a restore of many small files take seconds rather than
// minutes; on a local disk they overlap reads, writes and the CPU's work.

const (
	// DefaultRestoreWorkers is how many chunks a restore fetches at once
	// unless RestoreOptions.Workers says otherwise: many, as most chunks
	// are small files' (their reads from disk or S3 are what a restore
	// waits for), within restoreBytesInFlight. As many openers as CPUs
	// (GOMAXPROCS, at most Workers) open and write them.
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
	wctx    context.Context // cancelled to stop the workers
	cancel  context.CancelFunc
	tasks   chan chunkTask
	fetched chan fetchedChunk
	slots   chan struct{}       // a value per file in flight
	budget  *semaphore.Weighted // restoreBytesInFlight
	fetchWG sync.WaitGroup      // the fetchers
	openWG  sync.WaitGroup      // the openers

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
	base  string
	fd    int // -1 until created
	seq   int64
	made  sync.Once
	mkErr error        // why it could not be created
	left  atomic.Int32 // tasks not done, and one for the walk
	zeros atomic.Bool  // a chunk of zeros was left as a hole: truncate
	err   atomic.Pointer[error]
	done  chan struct{} // closed once whole, or removed
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
	r.fetched = make(chan fetchedChunk, n)
	r.slots = make(chan struct{}, maxFilesInFlight)
	r.budget = semaphore.NewWeighted(max(restoreBytesInFlight, backuprepo.MaxChunkSize))
	r.pending = map[*fileJob]string{}
	r.fetchWG.Add(n)
	for range n {
		go r.fetch()
	}
	m := min(n, runtime.GOMAXPROCS(0)) // four per CPU measured no faster

	r.openWG.Add(m)
	for range m {
		go r.open()
	}
}

// wait stops the walk's side: it leaves every directory, lets the workers
// finish what was queued (or drop it, when stopped) and waits for them.
func (r *restorer) wait() {
	r.popTo("")
	close(r.tasks)
	r.fetchWG.Wait()
	close(r.fetched)
	r.openWG.Wait()
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

// file queues a file's chunks; the first of them fetched creates it in
// directory d (the walk goes on meanwhile: a create is a read of the file
// system's free inodes, cold after a boot).
func (r *restorer) file(e *backuprepo.Entry, t *target, d *dirRef, base string) error {
	select {
	case r.slots <- struct{}{}:
	case <-r.wctx.Done():
		return r.stopped()
	}
	j := &fileJob{e: e, t: t, dir: d, base: base, fd: -1, seq: r.walkSeq, done: make(chan struct{})}
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

// failed names the file and which of its chunks err (fetching or opening
// it) is about.
func (tk chunkTask) failed(err error) error {
	return fmt.Errorf("restore %q: chunk %d of %d: %w", tk.job.e.Path, tk.index+1, len(tk.job.e.Chunks), err)
}

// fetchedChunk is a task whose chunk was fetched (sc), failed to be
// (err), or was not fetched: its file failed already or the restore
// stopped. held is what it holds of the byte budget.
type fetchedChunk struct {
	chunkTask
	sc   *backuprepo.SealedChunk
	err  error
	held int64
}

// create creates the file, once, on whichever goroutine needs it first;
// an error is local (see finish).
func (j *fileJob) create() error {
	j.made.Do(func() {
		fd, err := unix.Openat(j.dir.fd, j.base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			j.mkErr = fmt.Errorf("restore %q: create: %w", j.e.Path, err)
			return
		}
		j.fd = fd
	})
	return j.mkErr
}

// fetch creates the tasks' files, reads their chunks from the store and
// hands them to the openers. A file that cannot be created is not fetched
// (finish reports it).
func (r *restorer) fetch() {
	defer r.fetchWG.Done()
	for tk := range r.tasks {
		f := fetchedChunk{chunkTask: tk}
		if tk.job.err.Load() == nil && r.wctx.Err() == nil && tk.job.create() == nil {
			size := int64(tk.ref.Size)
			if f.err = r.budget.Acquire(r.wctx, size); f.err == nil { // else stopped
				f.held = size
				if f.sc, f.err = r.repo.FetchChunk(r.wctx, tk.ref); f.err != nil {
					f.err = tk.failed(f.err)
				}
			}
		}
		r.fetched <- f // the openers take every one until closed
	}
}

// open opens fetched chunks and writes them; the last chunk of a file
// finishes it.
func (r *restorer) open() {
	defer r.openWG.Done()
	for f := range r.fetched {
		j := f.job
		err := f.err
		if err == nil && f.sc != nil && j.err.Load() == nil && r.wctx.Err() == nil {
			err = r.writeChunk(f.chunkTask, f.sc)
		}
		r.budget.Release(f.held)
		if err != nil {
			j.err.CompareAndSwap(nil, &err)
		}
		if j.left.Add(-1) == 0 {
			r.finish(j)
		}
	}
}

// writeChunk opens a fetched chunk and writes it where it goes; a chunk
// of zeros is left as a hole.
func (r *restorer) writeChunk(tk chunkTask, sc *backuprepo.SealedChunk) error {
	e := tk.job.e
	data, err := r.repo.OpenChunkOrCopy(r.wctx, sc)
	if err != nil {
		return tk.failed(err)
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

// finish sets a file's metadata once all its chunks are written, or
// removes it (and lists it, unless the restore was stopped). Every task
// of j is done (its counter says so): j.fd is what they left.
// earlyWriteback is the size from which a restored file is handed to the
// disk as soon as it is whole: the final syncfs then has less left to
// write (0.4 s instead of 0.7 s for the 1 GiB bench data set, and a
// restore 2% shorter). Doing it for every file cost more than it saved
// (their small writes, one by one: 10.5 s instead of 9.4 s).
const earlyWriteback = 64 << 10

func (r *restorer) finish(j *fileJob) {
	e, pfd := j.e, j.dir.fd
	var err error
	if p := j.err.Load(); p != nil {
		err = *p
	}
	local := false
	if err == nil {
		err = r.wctx.Err() // stopped
	}
	if err == nil {
		if err = j.create(); err != nil { // a file without chunks is created here
			local = true
		}
	}
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
	created := j.fd >= 0
	if err == nil && created && e.Size >= earlyWriteback {
		// Start writing it to disk now rather than at the final syncfs
		// (which still waits for it, and reports any error).
		_ = unix.SyncFileRange(j.fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	if created {
		if cerr := unix.Close(j.fd); err == nil && cerr != nil {
			err, local = fmt.Errorf("restore %q: %w", e.Path, cerr), true
		}
	}
	if err == nil && r.wctx.Err() != nil {
		err = r.wctx.Err()
	}
	if err != nil && created {
		if uerr := unix.Unlinkat(pfd, j.base, 0); uerr != nil && !errors.Is(uerr, unix.ENOENT) {
			r.log.Warn("remove a file not restored", "path", e.Path, "err", uerr)
		}
	}
	if err != nil {
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

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
