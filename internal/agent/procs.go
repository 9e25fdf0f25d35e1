package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// procTable starts session processes and delivers their exit statuses.
//
// In reaper mode (the agent is PID 1, or a child subreaper in tests) a single
// loop calls wait4(-1) for every SIGCHLD: it reaps orphans that were
// reparented to us and hands the status of our own children to the waiter
// registered for their pid. Starting a process and registering its waiter
// happen under the same lock the reaper holds while it reaps, so a child that
// exits at once can never be reaped before its waiter exists. Nothing else in
// the process may wait for children in that mode (no exec.Cmd.Wait).
//
// Otherwise each process is waited for by its own goroutine.
type procTable struct {
	reap bool
	log  *slog.Logger
	act  *activity // touched when a process starts or exits (may be nil)

	mu    sync.Mutex
	procs map[int]*proc
}

// proc is a started process.
type proc struct {
	pid    int
	p      *os.Process
	group  bool // leader of its own process group (setsid)
	done   chan struct{}
	status syscall.WaitStatus
}

func newProcTable(reap bool, log *slog.Logger) *procTable {
	return &procTable{reap: reap, log: log, procs: make(map[int]*proc)}
}

// start starts a process like os.StartProcess and tracks it until it exits.
func (t *procTable) start(name string, argv []string, attr *os.ProcAttr) (*proc, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, err := os.StartProcess(name, argv, attr)
	if err != nil {
		return nil, err
	}
	pr := &proc{pid: p.Pid, p: p, done: make(chan struct{})}
	if attr.Sys != nil && attr.Sys.Setsid {
		pr.group = true
	}
	t.procs[pr.pid] = pr
	t.act.touch()
	if !t.reap {
		go t.waitOne(pr)
	}
	return pr, nil
}

func (t *procTable) waitOne(pr *proc) {
	st, err := pr.p.Wait()
	var ws syscall.WaitStatus
	if err != nil {
		t.log.Warn("wait for process", "pid", pr.pid, "err", err)
		ws = syscall.WaitStatus(255 << 8) // exit status 255
	} else if s, ok := st.Sys().(syscall.WaitStatus); ok {
		ws = s
	}
	t.mu.Lock()
	t.finish(pr, ws)
	t.mu.Unlock()
}

// finish records pr's exit; t.mu must be held.
func (t *procTable) finish(pr *proc, ws syscall.WaitStatus) {
	t.act.touch()
	delete(t.procs, pr.pid)
	pr.status = ws
	pr.p.Release()
	close(pr.done)
}

// reapSweep is how often the reaper looks without a SIGCHLD.
const reapSweep = time.Minute

// runReaper reaps children until ctx is done. It must run only in reap mode.
func (t *procTable) runReaper(ctx context.Context) {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	// Coalesced SIGCHLDs lose nothing: every one received reaps all that
	// exited, and one that finds the channel full leaves one pending there.
	// The sweep is a last resort, rare so that an idle environment's agent
	// sleeps (it was every 5 s).
	tick := time.NewTicker(reapSweep)
	defer tick.Stop()
	for {
		t.reapAll()
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		case <-tick.C:
		}
	}
}

// reapAll collects every child that has exited, without blocking.
func (t *procTable) reapAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none exited yet
		}
		if pr, ok := t.procs[pid]; ok {
			t.finish(pr, ws)
			continue
		}
		t.act.touch()
		t.log.Debug("reaped orphan", "pid", pid, "status", int(ws))
	}
}

// signal sends sig to pr (its whole process group if it leads one).
func (t *procTable) signal(pr *proc, sig syscall.Signal, group bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-pr.done:
		return os.ErrProcessDone
	default:
	}
	if group && pr.group {
		return syscall.Kill(-pr.pid, sig)
	}
	return pr.p.Signal(sig)
}

// signalAll sends sig to every tracked process group and returns how many
// processes are still running.
func (t *procTable) signalAll(sig syscall.Signal) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, pr := range t.procs {
		if pr.group {
			syscall.Kill(-pr.pid, sig)
		} else {
			pr.p.Signal(sig)
		}
	}
	return len(t.procs)
}

// running returns the number of tracked processes that have not exited.
func (t *procTable) running() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.procs)
}

// wait blocks until pr exits and returns its status.
func (pr *proc) wait() syscall.WaitStatus {
	<-pr.done
	return pr.status
}
