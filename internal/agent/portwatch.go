package agent

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// Port discovery looks often while something happens in the environment
// and rarely when nothing does: an idle environment must cost next to no
// CPU, and every look wakes the agent (the look itself, a sock_diag dump,
// is the smaller part of its cost).
//
//   - After activity it looks every defaultPortsFast (250 ms) for
//     portsHot (10 s). Activity is what the agent sees itself — a
//     process it starts or reaps, data on a session (a command typed in
//     a terminal, its output), a forwarded connection — and, at each look,
//     a new process or thread in the environment (the pid namespace's last
//     allocated pid, /proc/sys/kernel/ns_last_pid, moved) or a change of
//     the listening ports.
//   - Then it looks every defaultPortsIdle (5 s), until activity wakes it
//     again at once.
//
// So a port opened by a process started in a session, or by anything that
// starts a process or thread, is reported within about 250 ms; a port an
// already running process opens while nothing else happens, within 5 s.
const (
	defaultPortsFast = 250 * time.Millisecond
	defaultPortsIdle = 5 * time.Second
	portsHot         = 10 * time.Second
)

// nsLastPid is the last pid allocated in the reader's pid namespace (the
// environment's: the agent is its PID 1).
const nsLastPid = "/proc/sys/kernel/ns_last_pid"

// activity records when something last happened that may open or close a
// listening port, and wakes port watchers that wait out a long interval.
// touch is cheap enough for every chunk of session data.
type activity struct {
	last    atomic.Int64 // time.Now().UnixNano() of the last touch
	waiting atomic.Bool  // a watcher waits on wake

	mu   sync.Mutex
	wake chan struct{} // closed by touch; nil when nobody waits
}

func (a *activity) touch() {
	if a == nil {
		return
	}
	a.last.Store(time.Now().UnixNano())
	if !a.waiting.Load() {
		return
	}
	a.mu.Lock()
	if a.wake != nil {
		close(a.wake)
		a.wake = nil
	}
	a.waiting.Store(false)
	a.mu.Unlock()
}

// since is how long ago the last touch was (a very long time if never).
func (a *activity) since(now time.Time) time.Duration {
	l := a.last.Load()
	if l == 0 {
		return time.Duration(1<<63 - 1)
	}
	return now.Sub(time.Unix(0, l))
}

// woken returns a channel closed at the next touch.
func (a *activity) woken() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.wake == nil {
		a.wake = make(chan struct{})
	}
	a.waiting.Store(true)
	return a.wake
}

// activeWriter touches act on every write to w (act may be nil).
type activeWriter struct {
	w   io.Writer
	act *activity
}

func (w activeWriter) Write(p []byte) (int, error) {
	w.act.touch()
	return w.w.Write(p)
}

// portSchedule decides how long port discovery waits before its next look.
type portSchedule struct {
	fast, idle, hot time.Duration
	lastNews        time.Time // when a look last saw something new
}

// next returns the wait after a look at now: fast while a look saw
// something new or there was activity within hot, else idle.
func (s *portSchedule) next(now time.Time, news bool, sinceActivity time.Duration) time.Duration {
	if news {
		s.lastNews = now
	}
	if sinceActivity < s.hot || now.Sub(s.lastNews) < s.hot {
		return s.fast
	}
	return s.idle
}

// pidWatch tells whether a new process or thread appeared in the pid
// namespace since the last call, by its last allocated pid.
type pidWatch struct {
	path string
	last []byte
	buf  [32]byte
}

func (p *pidWatch) moved() bool {
	if p.path == "" {
		return false
	}
	f, err := os.Open(p.path)
	if err != nil {
		p.path = "" // no procfs or no such file: rely on the rest
		return false
	}
	n, _ := f.Read(p.buf[:])
	f.Close()
	cur := p.buf[:n]
	moved := p.last != nil && !bytes.Equal(cur, p.last)
	p.last = append(p.last[:0], cur...)
	return moved
}

// handlePorts serves a agentproto.PortsChannel: it looks at the listening
// ports of the agent's network namespace (the environment's; sock_diag, see
// sockdiag.go) on the schedule above and writes the full list as a JSON
// line at once and on every change. Each subscriber looks on its own; there
// is rarely more than one (the runner).
func (a *agent) handlePorts(srv *ssh.Server, conn *gossh.ServerConn, newChan gossh.NewChannel, sctx ssh.Context) {
	ch, reqs, err := newChan.Accept()
	if err != nil {
		a.log.Debug("accept ports channel", "err", err)
		return
	}
	defer ch.Close()
	go gossh.DiscardRequests(reqs)

	ctx, cancel := context.WithCancel(sctx)
	defer cancel()
	go func() {
		// The client never sends anything that matters; EOF or an error
		// means it is gone.
		_, _ = io.Copy(io.Discard, ch)
		cancel()
	}()

	sched := portSchedule{fast: cmp.Or(a.cfg.portsInterval, defaultPortsFast), idle: cmp.Or(a.cfg.portsIdle, defaultPortsIdle), hot: cmp.Or(a.cfg.portsHot, portsHot)}
	sched.idle = max(sched.idle, sched.fast)
	pids := pidWatch{path: nsLastPid}
	if a.cfg.nsLastPid != "" {
		pids.path = a.cfg.nsLastPid
	}
	t := time.NewTimer(0)
	defer t.Stop()
	var last []agentproto.Port
	sent, lastErr := false, ""
	list := portLister(a.cfg.procNetFiles)
	for {
		ports, err := list()
		news := pids.moved()
		switch {
		case err != nil:
			if err.Error() != lastErr {
				a.log.Warn("port discovery", "err", err)
				lastErr = err.Error()
			}
		case !sent || !slices.Equal(ports, last):
			news = news || sent
			line, err := json.Marshal(ports)
			if err != nil {
				a.log.Error("encode ports", "err", err)
				return
			}
			if _, err := ch.Write(append(line, '\n')); err != nil {
				return
			}
			last, sent, lastErr = ports, true, ""
		}
		now := time.Now()
		wait := sched.next(now, news, a.act.since(now))
		var woken <-chan struct{}
		if wait > sched.fast {
			woken = a.act.woken()
			// A touch between the two reads above closed no channel.
			if a.act.since(time.Now()) < sched.hot {
				wait = sched.fast
			}
		}
		if a.cfg.portsWait != nil {
			a.cfg.portsWait(wait)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-woken:
			// Something happened: look now, and often for a while.
		}
	}
}
