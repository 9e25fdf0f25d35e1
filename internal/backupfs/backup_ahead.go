package backupfs

import (
	"context"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
)

// Reading ahead. A full backup of a cold tree spends most of its time
// waiting for reads, one small file after another. So files are read and
// chunked by a few workers while the walk goes on, and their entries are
// added to the manifest in walk order as each becomes ready:
//
//   - The walk (one goroutine, the caller's) lists, stats, reads links and
//     attributes and opens every file itself, through the descriptor of
//     its directory without following a symlink and checking the inode
//     (confine.Entry.Open), exactly as without workers. A worker gets the
//     open descriptor only: it never resolves a name, so a name swapped
//     for a symlink after the open is never followed.
//   - Entries wait in a queue, in walk order, until every file before them
//     was read; the walk adds them to the manifest (backuprepo.Writer.Add)
//     and counts them. Everything but reading a file's content stays on
//     the walk's goroutine (the comparison with the previous backup, the
//     result's lists and counters, hard links).
//   - Bounded: at most readWorkers files are read at once and
//     readWorkers more wait opened for a worker (descriptors), and at most
//     maxAhead entries wait in the queue; the walk blocks on the oldest
//     when the queue is full. Each reading worker holds one chunker buffer
//     (backuprepo.Key.Split); the chunks go to the writer's uploads,
//     bounded there (8 in flight).
//   - The first error of a worker (the store's, not a file's that cannot
//     be read: that file is skipped and listed) cancels the walk and the
//     other workers; Backup waits for every worker and every upload in
//     flight, closes every descriptor, commits nothing and returns it.
//
// Within one CPU (the backup child's default limit) this overlaps the
// reads' IO waits with chunking, hashing and compressing.

// readWorkers is how many files are read at once (a test sets it).
var readWorkers = 4

// maxAhead bounds the entries waiting for an earlier file to be read;
// maxAheadBytes what they hold (names, link targets, extended attributes:
// up to 256 KiB each, and chunk lists), so a tree of files with large
// attributes does not fill the backup child's memory (review REV-S8-8).
// While a large changed file is read again (100 MiB: half a second), the
// walk goes on through thousands of unchanged files (a few MiB).
const maxAhead = 16384

var maxAheadBytes = 16 << 20 // a test lowers it

// aheadQueued, when set (tests), sees the queue's length and bytes after
// each entry queued.
var aheadQueued func(entries, bytes int)

// entryBytes is about what an entry holds in memory.
func entryBytes(e *backuprepo.Entry) int {
	n := 128 + len(e.Path) + len(e.Target) + 48*len(e.Chunks)
	for k, v := range e.Xattrs {
		n += len(k) + len(v)
	}
	return n
}

// pending is an entry of the queue: ready to add, or a file being read.
type pending struct {
	e    backuprepo.Entry
	prev *backuprepo.Entry

	// A file read by a worker: done is closed when out, e's content and
	// times are set (the worker owns e until then).
	read *readJob
	// A file reusing its previous chunks (counted, compared).
	reused bool
	file   bool   // counted as a file in the result
	link   devIno // multiply linked file (nlink > 1): its key, else zero
	bytes  int    // entryBytes when queued
}

// readJob is one file handed to a worker.
type readJob struct {
	f    *os.File
	stat unix.Stat_t // as listed
	rel  string
	e    *backuprepo.Entry
	prev []backuprepo.ChunkRef // the previous backup's chunks of the path, if a file
	done chan struct{}
	out  readOut
}

// readOut is what reading a file gave.
type readOut struct {
	ok               bool   // content stored in e
	skip             string // why it was skipped, when not ok and err is nil
	changedWhileRead bool
	err              error
}

// ahead is the queue and the workers.
type ahead struct {
	queue   []*pending
	bytes   int // entryBytes of the queue's entries, as queued
	jobs    chan *readJob
	wg      sync.WaitGroup
	started bool
	linking map[devIno]bool // multiply linked files queued, not yet added
}

// startWorkers starts the readers, once per backup.
func (b *backuper) startWorkers() {
	if b.ah.started {
		return
	}
	b.ah.started = true
	n := max(readWorkers, 1)
	b.ah.jobs = make(chan *readJob, n)
	for range n {
		b.ah.wg.Add(1)
		go func() {
			defer b.ah.wg.Done()
			for j := range b.ah.jobs {
				b.runJob(j)
			}
		}()
	}
}

// runJob reads one file (on a worker) and closes its descriptor.
func (b *backuper) runJob(j *readJob) {
	defer close(j.done)
	defer j.f.Close()
	if err := b.ctx.Err(); err != nil {
		j.out.err = err
		return
	}
	j.out = b.read(j.f, &j.stat, j.rel, j.e, j.prev)
	if j.out.err != nil {
		b.cancel(j.out.err) // stops the walk and the other workers
	}
}

// stopWorkers ends the workers once every job was taken (after a failure
// the remaining ones see the cancelled context and only close their
// descriptors), and waits for them.
func (b *backuper) stopWorkers() {
	if !b.ah.started {
		return
	}
	close(b.ah.jobs)
	b.ah.wg.Wait()
	b.ah.started = false
}

// submit queues p: added at once when nothing is before it, else when
// everything before it is.
func (b *backuper) submit(p *pending) error {
	if p.read == nil && len(b.ah.queue) == 0 {
		return b.commit(p)
	}
	// Counted before a worker gets the file: from then on the worker
	// writes its chunk list, estimated here from the size it was listed at.
	// The previous entry is held too (a reused file's chunk list: 2 MiB
	// for a sparse file of 256 GiB), and no longer counted by the
	// previous backup's reader (review S10-1).
	p.bytes = entryBytes(&p.e)
	if p.prev != nil {
		p.bytes += entryBytes(p.prev)
	}
	if p.read != nil {
		p.bytes += 48 * int(min(p.read.stat.Size/backuprepo.MinChunkSize+1, 1<<20))
		b.startWorkers()
		select {
		case b.ah.jobs <- p.read:
		case <-b.ctx.Done():
			p.read.f.Close()
			return context.Cause(b.ctx)
		}
	}
	if p.link != (devIno{}) {
		if b.ah.linking == nil {
			b.ah.linking = map[devIno]bool{}
		}
		b.ah.linking[p.link] = true
	}
	b.ah.queue = append(b.ah.queue, p)
	b.ah.bytes += p.bytes
	if aheadQueued != nil {
		aheadQueued(len(b.ah.queue), b.ah.bytes)
	}
	return b.commitReady(len(b.ah.queue) >= maxAhead || b.ah.bytes >= maxAheadBytes)
}

// commitReady adds the queue's ready entries, in order; with wait it
// waits for the oldest entry first (the queue is full).
func (b *backuper) commitReady(wait bool) error {
	for len(b.ah.queue) > 0 {
		p := b.ah.queue[0]
		if p.read != nil {
			if wait {
				select {
				case <-p.read.done:
				case <-b.ctx.Done():
					return context.Cause(b.ctx)
				}
				wait = false
			} else {
				select {
				case <-p.read.done:
				default:
					return nil
				}
			}
		}
		b.ah.queue[0] = nil
		b.ah.queue = b.ah.queue[1:]
		b.ah.bytes -= p.bytes
		if err := b.commit(p); err != nil {
			return err
		}
	}
	return nil
}

// flushAhead waits for every file queued and adds every entry.
func (b *backuper) flushAhead() error {
	for len(b.ah.queue) > 0 {
		if err := b.commitReady(true); err != nil {
			return err
		}
	}
	return nil
}

// commit adds one entry whose content is known, and counts it.
func (b *backuper) commit(p *pending) error {
	if p.link != (devIno{}) {
		delete(b.ah.linking, p.link)
	}
	if j := p.read; j != nil {
		if j.out.err != nil {
			return j.out.err
		}
		if j.out.changedWhileRead {
			b.res.ChangedWhileReadCount++
			if len(b.res.ChangedWhileRead) < MaxListed {
				b.res.ChangedWhileRead = append(b.res.ChangedWhileRead, p.e.Path)
			}
			b.log.Warn("file changed while being backed up, stored as read", "path", p.e.Path)
		}
		if !j.out.ok {
			b.skip(p.e.Path, j.out.skip)
			return nil
		}
		if err := b.add(p.e, p.prev); err != nil {
			return err
		}
	} else if p.reused {
		if err := b.w.Reuse(b.ctx, p.e, p.prev); err != nil {
			return fmt.Errorf("back up %q: %w", p.e.Path, err)
		}
		p.e.Size, p.e.Chunks = p.prev.Size, p.prev.Chunks
		if !sameEntry(&p.e, p.prev) {
			b.differ("%q changed", p.e.Path)
		}
	} else if err := b.add(p.e, p.prev); err != nil {
		return err
	}
	if !p.file {
		return nil
	}
	if p.link != (devIno{}) {
		if len(b.links) < maxLinks {
			b.links[p.link] = p.e.Path
		} else if len(b.links) == maxLinks {
			b.links[devIno{}] = "" // listed once
			b.skip(p.e.Path, fmt.Sprintf("more than %d files with several names in this tree: further names stored as copies", maxLinks))
		}
	}
	b.res.Files++
	b.res.Bytes += p.e.Size
	b.progress.Files++
	b.progress.Bytes += p.e.Size
	b.report(false)
	return nil
}
