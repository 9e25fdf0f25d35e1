// Command ioprobe is what bench/io runs inside the environments: a static
// binary the benchmark builds and copies in, so that the measurement does
// not depend on the image's tools.
//
//	ioprobe fsync -file F [-n 1000] [-size 4096] [-gap 10ms] [-max 0]
//
// appends -size bytes to F and fsyncs it, -n times (or until -max has
// passed), -gap apart, and prints each write+fsync's latency in
// nanoseconds, one a line. F is removed at the end.
//
//	ioprobe write -dir D [-writers 4] [-block 1MiB] [-file-size 512MiB] [-keep 2] [-fsync-every 64MiB]
//
// runs -writers goroutines, each writing -block buffers to files in D as
// fast as it can (buffered writes; an fsync after every -fsync-every
// bytes, 0: never, leaving the writeback to the kernel). A file that
// reached -file-size is closed and the next one opened; each writer keeps
// its last -keep files, removing older ones, so the disk space used stays
// bounded. Commands come on standard input, one a line: "mark" prints
// "mark NS WRITTEN SYNCED" (nanoseconds since start, bytes written and
// bytes fsynced so far). At the end of standard input the writers stop,
// "done NS WRITTEN SYNCED" is printed and the files are removed.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: ioprobe fsync|write [flags]"))
	}
	var err error
	switch os.Args[1] {
	case "fsync":
		err = fsyncMain(os.Args[2:], os.Stdout)
	case "write":
		err = writeMain(os.Args[2:], os.Stdin, os.Stdout)
	default:
		err = fmt.Errorf("unknown mode %q: want fsync or write", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ioprobe:", err)
	os.Exit(1)
}

func fsyncMain(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("fsync", flag.ContinueOnError)
	file := fs.String("file", "", "file to append to (removed at the end)")
	n := fs.Int("n", 1000, "write+fsync operations")
	size := fs.Int("size", 4096, "bytes per write")
	gap := fs.Duration("gap", 10*time.Millisecond, "pause between operations")
	most := fs.Duration("max", 0, "stop after this long even if fewer than -n operations are done (0: no limit)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" || *n < 1 || *size < 1 {
		return errors.New("fsync: -file, -n ≥ 1 and -size ≥ 1 are needed")
	}
	f, err := os.OpenFile(*file, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer os.Remove(*file)
	defer f.Close()
	buf := make([]byte, *size)
	for i := range buf {
		buf[i] = byte(i)
	}
	out := bufio.NewWriter(stdout)
	start := time.Now()
	for i := 0; i < *n && (*most == 0 || time.Since(start) < *most); i++ {
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		fmt.Fprintln(out, time.Since(t0).Nanoseconds())
		time.Sleep(*gap)
	}
	if err := out.Flush(); err != nil {
		return err
	}
	return f.Close()
}

type writer struct {
	dir             string
	writers, keep   int
	block, fileSize int64
	fsyncEvery      int64
	blockBuf        []byte
	start           time.Time
	out             io.Writer

	written, synced atomic.Int64
	stop            atomic.Bool
	wg              sync.WaitGroup
	errOnce         sync.Once
	firstErr        error
	filesMu         sync.Mutex
	files           []string // every file made, for the removal at the end
}

func writeMain(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("write", flag.ContinueOnError)
	w := &writer{}
	fs.StringVar(&w.dir, "dir", "", "directory for the files")
	fs.IntVar(&w.writers, "writers", 4, "parallel writers")
	fs.Int64Var(&w.block, "block", 1<<20, "bytes per write")
	fs.Int64Var(&w.fileSize, "file-size", 512<<20, "bytes per file before the next one")
	fs.IntVar(&w.keep, "keep", 2, "files each writer keeps")
	fs.Int64Var(&w.fsyncEvery, "fsync-every", 64<<20, "bytes between fsyncs (0: never)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if w.dir == "" || w.writers < 1 || w.block < 1 || w.fileSize < w.block || w.keep < 1 || w.fsyncEvery < 0 {
		return errors.New("write: -dir is needed, -writers, -block and -keep ≥ 1, -file-size ≥ -block, -fsync-every ≥ 0")
	}
	w.blockBuf = make([]byte, w.block)
	for i := range w.blockBuf {
		w.blockBuf[i] = byte(i * 7)
	}
	w.start, w.out = time.Now(), stdout
	for i := 0; i < w.writers; i++ {
		w.wg.Add(1)
		go w.run(i)
	}
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "mark" {
			w.report("mark")
		}
	}
	w.stop.Store(true)
	w.wg.Wait()
	w.report("done")
	w.filesMu.Lock()
	for _, f := range w.files {
		_ = os.Remove(f)
	}
	w.filesMu.Unlock()
	return w.firstErr
}

func (w *writer) report(what string) {
	fmt.Fprintf(w.out, "%s %d %d %d\n", what, time.Since(w.start).Nanoseconds(), w.written.Load(), w.synced.Load())
}

func (w *writer) fail(err error) {
	w.errOnce.Do(func() {
		w.firstErr = err
		fmt.Fprintln(os.Stderr, "ioprobe:", err)
	})
}

// run is writer i: files i.0, i.1, … in w.dir until w.stop.
func (w *writer) run(i int) {
	defer w.wg.Done()
	var kept []string
	for gen := 0; !w.stop.Load(); gen++ {
		name := filepath.Join(w.dir, fmt.Sprintf("ioprobe-write-%d.%d", i, gen))
		w.filesMu.Lock()
		w.files = append(w.files, name)
		w.filesMu.Unlock()
		if err := w.fill(name); err != nil {
			w.fail(err)
			return
		}
		if kept = append(kept, name); len(kept) > w.keep {
			_ = os.Remove(kept[0])
			kept = kept[1:]
		}
	}
}

// fill writes one file up to w.fileSize or until w.stop.
func (w *writer) fill(name string) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	var size, unsynced int64
	for size < w.fileSize && !w.stop.Load() {
		n, err := f.Write(w.blockBuf)
		size += int64(n)
		unsynced += int64(n)
		w.written.Add(int64(n))
		if err != nil {
			return err
		}
		if w.fsyncEvery > 0 && unsynced >= w.fsyncEvery {
			if err := f.Sync(); err != nil {
				return err
			}
			w.synced.Add(unsynced)
			unsynced = 0
		}
	}
	return f.Close()
}
