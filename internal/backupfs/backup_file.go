package backupfs

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/confine"
)

// file backs up a regular file entry: a hard link to a path already backed
// up in this tree, its previous chunks when unchanged, else its content,
// read by a worker (see backup_ahead.go) through the descriptor opened
// here. prev is the previous backup's entry of its path.
func (b *backuper) file(ce *confine.Entry, e backuprepo.Entry, prev *backuprepo.Entry) error {
	st := &ce.Stat
	key := devIno{dev: st.Dev, ino: st.Ino}
	if st.Nlink > 1 {
		if b.ah.linking[key] {
			// Its first name is still being read: whether this one is a
			// link to it depends on that read.
			if err := b.flushAhead(); err != nil {
				return err
			}
		}
		if first, ok := b.links[key]; ok {
			e.Type, e.Target, e.Xattrs = backuprepo.TypeHardlink, first, nil
			return b.submit(&pending{e: e, prev: prev})
		}
	} else {
		key = devIno{}
	}
	if st.Size > backuprepo.MaxFileSize {
		// A sparse disk image, say: refused by the store, it would fail
		// the whole backup.
		b.skip(e.Path, fmt.Sprintf("larger than %d GiB", backuprepo.MaxFileSize>>30))
		return nil
	}
	cur := statOf(st)
	e.Ctime, e.Inode = cur.Ctime, cur.Inode
	p := &pending{e: e, prev: prev, file: true, link: key}
	if backuprepo.Unchanged(prev, cur) {
		p.reused = true
		return b.submit(p)
	}
	f, err := openFile(ce)
	if err != nil {
		return b.vanished(e.Path, err)
	}
	b.res.Read++
	p.read = &readJob{f: f, stat: *st, rel: ce.Rel, e: &p.e, done: make(chan struct{})}
	if prev != nil && prev.Type == backuprepo.TypeFile {
		p.read.prev = prev.Chunks // read-only: the walk holds prev until p is added
	}
	return b.submit(p)
}

// statOf is what tells whether a file changed since a backup.
func statOf(st *unix.Stat_t) backuprepo.FileStat {
	return backuprepo.FileStat{Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(), Inode: st.Ino}
}

// afterRead is called when a file's content was read (a test changes the
// file there).
var afterRead = func(rel string) {}

// maxLinks bounds the files with several names a walk remembers (their
// first path), in one tree: the names of the others are stored as copies.
var maxLinks = 1 << 20

// onRead counts the bytes read from files (a test checks holes are not
// read).
var onRead = func(n int) {}

// fileReader reads a file, keeping its error apart from the store's: by
// Read from r, or by ReadAt from ra (one goroutine at a time).
type fileReader struct {
	r   io.Reader
	ra  io.ReaderAt
	err error
}

func (f *fileReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	return n, f.got(n, err)
}

func (f *fileReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.ra.ReadAt(p, off)
	return n, f.got(n, err)
}

func (f *fileReader) got(n int, err error) error {
	onRead(n)
	if err != nil && err != io.EOF {
		f.err = err
	}
	return err
}

// read stores the content of the file f (listed as listed) into e, on a
// worker: it touches nothing but f, e and the writer. The file was opened
// beneath its parent without following a symlink and is the inode listed
// (file); at most the size it had when read begins is read. A file whose
// size or times change while read is read once more; changing again, it is
// stored as read and reported. out.ok is false when the file is skipped.
// prev is the previous backup's chunk list of the path, if any.
func (b *backuper) read(f *os.File, listed *unix.Stat_t, rel string, e *backuprepo.Entry, prev []backuprepo.ChunkRef) (out readOut) {
	failed := func(err error) readOut { return readOut{err: fmt.Errorf("back up %q: %w", e.Path, err)} }
	for attempt := 0; ; attempt++ {
		var before, after unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &before); err != nil {
			return failed(err)
		}
		if attempt > 0 {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return failed(err)
			}
		}
		refs, size, fr, err := b.content(f, &before, prev)
		if err == nil && fr.err == nil && int64(len(refs)) > size/backuprepo.MinChunkSize+1 {
			// Cannot happen (see minHole); read it whole rather than fail.
			b.log.Warn("sparse file cut in too many chunks: read whole", "path", e.Path)
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return failed(err)
			}
			fr = &fileReader{r: io.LimitReader(f, before.Size)}
			refs, size, err = b.w.StoreContent(b.ctx, fr)
		}
		afterRead(rel)
		if fr.err != nil {
			return readOut{skip: "unreadable: " + fr.err.Error()}
		}
		if err != nil {
			return failed(err)
		}
		if err := unix.Fstat(int(f.Fd()), &after); err != nil {
			return failed(err)
		}
		stable := size == before.Size && sameTimes(&before, &after)
		if attempt == 0 {
			stable = stable && sameTimes(listed, &before)
		}
		e.Chunks, e.Size = refs, size
		if stable && attempt == 0 {
			return readOut{ok: true}
		}
		if stable || attempt == 1 {
			// The listed metadata may be stale: a zero ctime makes the
			// next backup read the file again.
			e.Mtime, e.Ctime = before.Mtim.Nano(), 0
			return readOut{ok: true, changedWhileRead: !stable}
		}
	}
}

// minHole is the least hole of a sparse file that is not read: holes of
// at least MaxChunkSize keep a file's chunk count within what a manifest
// allows (Entry.Validate) whatever its layout.
const minHole = backuprepo.MaxChunkSize

// content stores the content of f (of st.Size bytes, at most). A file
// with a previous chunk list (prev) reuses the chunks still at their place
// without storing them again (Writer.StoreChanged). The holes of a sparse
// file (fewer blocks than its size) of at least minHole are found with
// SEEK_HOLE and stored as zero chunks without being read or chunked: a
// sparse disk image costs what its data costs, not its size.
func (b *backuper) content(f *os.File, st *unix.Stat_t, prev []backuprepo.ChunkRef) ([]backuprepo.ChunkRef, int64, *fileReader, error) {
	fr := &fileReader{}
	if st.Blocks*512 >= st.Size || st.Size < minHole {
		if len(prev) > 0 {
			fr.ra = f
			refs, n, err := b.w.StoreChanged(b.ctx, fr, st.Size, prev)
			return refs, n, fr, err
		}
		fr.r = io.LimitReader(f, st.Size)
		refs, n, err := b.w.StoreContent(b.ctx, fr)
		return refs, n, fr, err
	}
	fd := int(f.Fd())
	var refs []backuprepo.ChunkRef
	for off := int64(0); off < st.Size; {
		hs, he, err := bigHole(fd, off, st.Size)
		if err != nil {
			fr.err = err
			return nil, 0, fr, nil
		}
		if hs > off {
			if _, err := f.Seek(off, io.SeekStart); err != nil {
				fr.err = err
				return nil, 0, fr, nil
			}
			fr.r = io.LimitReader(f, hs-off)
			rs, n, err := b.w.StoreContent(b.ctx, fr)
			if err != nil || fr.err != nil {
				return nil, 0, fr, err
			}
			refs = append(refs, rs...)
			if n < hs-off { // truncated meanwhile: what was read
				return refs, off + n, fr, nil
			}
		}
		if he > hs {
			zs, err := b.w.StoreZeros(b.ctx, he-hs)
			if err != nil {
				return nil, 0, fr, err
			}
			refs = append(refs, zs...)
		}
		off = max(he, hs)
	}
	return refs, st.Size, fr, nil
}

// bigHole returns the first hole [start, end) of at least minHole bytes at
// or after pos in the file of size bytes (start = end = size if none):
// shorter holes are read as data.
func bigHole(fd int, pos, size int64) (int64, int64, error) {
	for pos < size {
		h, err := unix.Seek(fd, pos, unix.SEEK_HOLE)
		if err != nil {
			return 0, 0, err
		}
		if h >= size {
			break
		}
		d, err := unix.Seek(fd, h, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			d = size // a hole up to the end
		} else if err != nil {
			return 0, 0, err
		}
		d = min(d, size)
		if d-h >= minHole {
			return h, d, nil
		}
		if d <= pos { // no progress: read the rest
			break
		}
		pos = d
	}
	return size, size, nil
}

func sameTimes(a, b *unix.Stat_t) bool {
	return a.Size == b.Size && a.Mtim == b.Mtim && a.Ctim == b.Ctim
}
