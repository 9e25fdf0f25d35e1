package backupfs

import (
	"context"
	"io"
	"sync"

	"golang.org/x/sync/semaphore"

	"github.com/covedev/cove/internal/backuprepo"
)

// entryReader yields a backup's entries in order, then io.EOF.
type entryReader interface {
	Next() (*backuprepo.Entry, error)
}

// prevAheadBytes bounds what the previous backup's entries decoded ahead
// of the walk hold (entryBytes: names, attributes — up to 256 KiB an
// entry, set by whoever controls the environment — and chunk lists). An
// entry larger than that alone (a file of hundreds of GiB) is queued only
// once everything before it was taken.
var prevAheadBytes int64 = 16 << 20 // a test lowers it

// prevAhead reads the previous backup's manifest on a goroutine of its
// own, ahead of the walk: decoding it (JSON, validation) was a third of
// the CPU of an incremental backup with nothing changed, on the walk's
// goroutine. Memory stays bounded by prevAheadBytes (and the entry being
// decoded).
type prevAhead struct {
	ch     chan []prevItem
	budget *semaphore.Weighted
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   bool
	batch  []prevItem // received, not yet taken
}

type prevItem struct {
	e      *backuprepo.Entry
	err    error
	weight int64
}

// prevBatch is how many entries go over the channel at once: one each
// woke the walk (or the reader) tens of thousands of times, and each
// wake-up waited for a CPU behind the workers' chunking and hashing.
const prevBatch = 256

func weightOf(e *backuprepo.Entry) int64 {
	return min(int64(entryBytes(e)), prevAheadBytes)
}

// readPrevAhead starts reading m, which loads its pieces under ctx from
// then on; stop must be called when done.
func readPrevAhead(ctx context.Context, m *backuprepo.ManifestReader) *prevAhead {
	ctx, cancel := context.WithCancel(ctx)
	m.WithContext(ctx) // stop cancels a piece being fetched (a store down)
	p := &prevAhead{ch: make(chan []prevItem, 4096/prevBatch), budget: semaphore.NewWeighted(prevAheadBytes), cancel: cancel}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(p.ch)
		var batch []prevItem
		send := func() bool {
			select {
			case p.ch <- batch:
				batch = nil
				return true
			case <-ctx.Done():
				return false
			}
		}
		for {
			if len(batch) > 0 && !m.Buffered() && !send() {
				return // the next piece is fetched: the walk gets what was decoded first
			}
			e, err := m.Next()
			var w int64
			if err == nil {
				w = weightOf(e)
				if !p.budget.TryAcquire(w) {
					// What holds the budget must reach the walk to be
					// released: the batch first.
					if len(batch) > 0 && !send() {
						return
					}
					if p.budget.Acquire(ctx, w) != nil {
						return // stopped
					}
				}
			}
			batch = append(batch, prevItem{e: e, err: err, weight: w})
			// Sent when full, or at once when the walk has taken all (it
			// may be waiting), and before a piece is fetched (above).
			if (len(batch) == prevBatch || err != nil || len(p.ch) == 0) && !send() {
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return p
}

// Next implements entryReader.
func (p *prevAhead) Next() (*backuprepo.Entry, error) {
	if p.done {
		return nil, io.EOF
	}
	if len(p.batch) == 0 {
		b, ok := <-p.ch
		if !ok {
			// Stopped before the end: only after stop, which the walk
			// does not call before it is through with the reader.
			p.done = true
			return nil, io.EOF
		}
		p.batch = b
	}
	it := p.batch[0]
	p.batch[0] = prevItem{}
	p.batch = p.batch[1:]
	if it.err != nil {
		p.done = true
		return nil, it.err
	}
	p.budget.Release(it.weight)
	return it.e, nil
}

// stop ends the reading and waits for its goroutine.
func (p *prevAhead) stop() {
	p.cancel()
	p.wg.Wait()
}
