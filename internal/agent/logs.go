package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"github.com/covedev/cove/internal/usererr"
)

const defaultLogsPoll = 250 * time.Millisecond

// serviceNameRE is what a Docker Compose service name may look like here:
// it names a file, so no separators and no leading dot.
var serviceNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

const maxServiceName = 200

// logSource returns the file a logs session streams and the user error for
// a missing file: the lifecycle log, or with service the service's output
// log (services/<service>.log in the lifecycle log's directory).
func (a *agent) logSource(service string) (path string, missing error, err error) {
	path = a.cfg.LogPath
	if path == "" {
		path = DefaultLogPath
	}
	if service == "" {
		return path, usererr.New("no creation or lifecycle logs yet"), nil
	}
	if len(service) > maxServiceName || !serviceNameRE.MatchString(service) {
		return "", nil, usererr.New("invalid service name %q", service)
	}
	path = filepath.Join(filepath.Dir(path), "services", service+".log")
	return path, usererr.New("no logs for service %q (is it a service of this environment?)", service), nil
}

// serveLogs streams the lifecycle log, or a service's output log, to the
// channel (the agentproto.LogsSubsystem). It runs in the agent itself: the files are
// written by the runner and mounted read-only, so nothing runs as a user.
func (s *session) serveLogs(follow bool, service string) {
	go io.Copy(io.Discard, s.ch)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.closed: // the client closed the channel or went away
			cancel()
		case <-ctx.Done():
		}
	}()
	poll := s.a.cfg.logsPoll
	if poll == 0 {
		poll = defaultLogsPoll
	}
	s.log.Info("session start", "kind", "logs", "follow", follow, "service", service)
	status := syscall.WaitStatus(0)
	path, missing, err := s.a.logSource(service)
	if err == nil {
		err = streamFile(ctx, path, s.ch, follow, func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(poll):
				return nil
			}
		}, missing)
	}
	if err != nil && ctx.Err() == nil {
		s.log.Debug("stream logs", "err", err)
		msg, ok := usererr.Message(err)
		if !ok {
			msg = err.Error()
		}
		fmt.Fprintf(s.ch.Stderr(), "cove agent: %s\n", msg)
		status = syscall.WaitStatus(1 << 8)
	}
	s.ch.CloseWrite()
	sendExit(s.ch, status)
	s.ch.Close()
	s.log.Info("session end", "kind", "logs", "status", exitDescription(status))
}

// tailCheck is how many of the last bytes streamed a follower compares
// with the file to notice that it was truncated and written again past
// where the follower was.
const tailCheck = 64

// streamFile copies path to w, preceded by path.1, the newest part of what
// the runner's log cap cut off (if there is one). With follow it then keeps
// copying what is appended, waiting with wait between looks; it starts over
// from the beginning of the file when the file is truncated (by the log
// cap, say, even if it grew past the follower's position again before the
// next look) or replaced, waits for a file that does not exist yet, and
// returns when wait fails (ctx is done). Without follow, a missing file
// returns the error missing.
func streamFile(ctx context.Context, path string, w io.Writer, follow bool, wait func(context.Context) error, missing error) error {
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	tw := &tailWriter{w: w}
	var off int64
	first := true
	for {
		if f == nil {
			var err error
			f, err = os.Open(path)
			switch {
			case errors.Is(err, fs.ErrNotExist) && !follow:
				return missing
			case errors.Is(err, fs.ErrNotExist):
				f = nil
			case err != nil:
				return fmt.Errorf("open log: %w", err)
			}
			off, tw.last = 0, tw.last[:0]
			if f != nil && first {
				first = false
				if err := copyRotated(path+".1", w); err != nil {
					return err
				}
			}
		}
		if f != nil {
			n, err := io.Copy(tw, f)
			off += n
			if err != nil {
				return fmt.Errorf("stream log: %w", err)
			}
		}
		if !follow {
			return nil
		}
		if err := wait(ctx); err != nil {
			return err
		}
		if f == nil {
			continue
		}
		// Replaced (rotated, recreated)? Read the new file from its start
		// once the old one is drained.
		cur, err1 := f.Stat()
		now, err2 := os.Stat(path)
		if err2 != nil || err1 != nil || !os.SameFile(cur, now) {
			if _, err := io.Copy(w, f); err != nil {
				return fmt.Errorf("stream log: %w", err)
			}
			f.Close()
			f = nil
			continue
		}
		if now.Size() < off || !tw.stillAt(f, off) { // truncated
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return fmt.Errorf("stream log: %w", err)
			}
			off, tw.last = 0, tw.last[:0]
		}
	}
}

// copyRotated copies the rotated part of a log, if there is one, to w.
func copyRotated(path string, w io.Writer) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(w, f); err != nil {
		return fmt.Errorf("stream log: %w", err)
	}
	return nil
}

// tailWriter passes writes on to w and remembers the last tailCheck bytes.
type tailWriter struct {
	w    io.Writer
	last []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	t.last = append(t.last, p[:n]...)
	if len(t.last) > tailCheck {
		t.last = append(t.last[:0], t.last[len(t.last)-tailCheck:]...)
	}
	return n, err
}

// stillAt reports whether f still holds, just before off, the bytes last
// streamed from it: if not, it was truncated and written again.
func (t *tailWriter) stillAt(f *os.File, off int64) bool {
	if len(t.last) == 0 {
		return true
	}
	buf := make([]byte, len(t.last))
	_, err := f.ReadAt(buf, off-int64(len(buf)))
	return err == nil && bytes.Equal(buf, t.last)
}
