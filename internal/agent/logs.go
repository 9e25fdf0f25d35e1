package agent

import (
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
// channel (the LogsSubsystem). It runs in the agent itself: the files are
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
		err = streamFile(ctx, path, s.ch, follow, poll, missing)
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

// streamFile copies path to w. With follow it then keeps copying what is
// appended, starts over when the file is truncated or replaced, waits for
// a file that does not exist yet, and returns when ctx is done. Without
// follow, a missing file returns the error missing.
func streamFile(ctx context.Context, path string, w io.Writer, follow bool, poll time.Duration, missing error) error {
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	var off int64
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
			off = 0
		}
		if f != nil {
			n, err := io.Copy(w, f)
			off += n
			if err != nil {
				return fmt.Errorf("stream log: %w", err)
			}
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
		if f == nil {
			continue
		}
		// Replaced (rotated, recreated)? Read the new file from its start
		// once the old one is drained (the copy above did that).
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
		if now.Size() < off { // truncated
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return fmt.Errorf("stream log: %w", err)
			}
			off = 0
		}
	}
}
