package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/covedev/cove/internal/atomicfile"
	"github.com/covedev/cove/internal/envdir"
	"golang.org/x/sys/unix"
)

// Log caps. The logs the runner keeps for an environment (lifecycle.log:
// creation, build and lifecycle output; the container's console.log; each
// Compose service's log) are appended to through descriptors the runner,
// runc and the containers hold open with O_APPEND. They are rotated by
// copy and truncate: when one passes logMaxBytes, its newest logKeepBytes
// go to <name>.1 (replacing the previous one) and the file is emptied in
// place, so every writer goes on appending at its new, small end.
const (
	logMaxBytes      = 10 << 20
	logKeepBytes     = 4 << 20
	logCheckInterval = 10 * time.Second
)

// envLogs lists the log files of one environment that may grow.
func envLogs(lay envdir.Layout) []string {
	out := []string{lay.LogFile(), filepath.Join(lay.Runtime(), "console.log")}
	ents, _ := os.ReadDir(filepath.Join(lay.LogDir(), "services"))
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".log") {
			out = append(out, filepath.Join(lay.LogDir(), "services", e.Name()))
		}
	}
	return out
}

// capLogs checks every environment's logs once.
func (j *janitor) capLogs() {
	envs := filepath.Join(j.dataDir, "envs")
	ents, err := os.ReadDir(envs)
	if err != nil {
		j.log.Warn("log caps", "err", err)
		return
	}
	for _, e := range ents {
		for _, p := range envLogs(envdir.Layout{Dir: filepath.Join(envs, e.Name())}) {
			cut, err := capLog(p, logMaxBytes, logKeepBytes)
			if err != nil {
				j.log.Warn("log cap", "env", e.Name(), "log", p, "err", err)
			} else if cut > 0 {
				j.log.Info("log rotated", "env", e.Name(), "log", p, "bytesDropped", cut, "kept", p+".1")
			}
		}
	}
}

// logCapLoop keeps environments' logs under their cap until ctx ends.
func (j *janitor) logCapLoop(ctx context.Context) {
	tick := time.NewTicker(logCheckInterval)
	defer tick.Stop()
	for {
		j.capLogs()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// capLog rotates the log at path if it is larger than maxBytes: its newest
// bytes (at most keepBytes, from the first line that starts within them) are
// written to path.1, then path is truncated in place and a line saying so
// is appended. It returns how many bytes were dropped altogether (0: the
// log was under its cap, or missing). A symlink or anything but a regular
// file is left alone.
func capLog(path string, maxBytes, keepBytes int64) (int64, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_APPEND|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("%s is not a regular file", path)
	}
	size := fi.Size()
	if size <= maxBytes {
		return 0, nil
	}
	// Writers keep appending while the tail is copied: take what came
	// meanwhile too, so only what lands between the last read and the
	// truncation is lost.
	from := max(size-keepBytes, 0)
	buf := make([]byte, size-from)
	if _, err := f.ReadAt(buf, from); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	for range 4 {
		st, err := f.Stat()
		if err != nil || st.Size() <= size {
			break
		}
		more := make([]byte, st.Size()-size)
		if _, err := f.ReadAt(more, size); err != nil {
			break
		}
		buf, size = append(buf, more...), st.Size()
	}
	if int64(len(buf)) > keepBytes {
		buf = buf[int64(len(buf))-keepBytes:]
	}
	// Start the kept part at a line.
	if i := bytes.IndexByte(buf[:min(len(buf), 64<<10)], '\n'); i >= 0 && i+1 < len(buf) {
		buf = buf[i+1:]
	}
	if err := atomicfile.Write(path+".1", buf, fi.Mode().Perm()); err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if err := f.Truncate(0); err != nil {
		return 0, fmt.Errorf("truncate %s: %w", path, err)
	}
	dropped := st.Size() - int64(len(buf))
	fmt.Fprintf(f, "[cove] this log passed %s and was cut here: the last %s before this line are in %s.1, older output is gone\n",
		sizeText(maxBytes), sizeText(int64(len(buf))), filepath.Base(path))
	return dropped, nil
}

// readTail reads at most the last n bytes of the file at path: a log may
// be far past its cap between two checks.
func readTail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(fi.Size()-n, 0)
	b := make([]byte, fi.Size()-off)
	k, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:k], nil
}

// sizeText says n bytes the way the cap line does.
func sizeText(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
