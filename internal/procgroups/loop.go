package procgroups

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// DefaultInterval is how often the runner looks at each environment.
const DefaultInterval = time.Second

// Env is an environment's dev container whose processes are sorted.
type Env struct {
	ID     string
	Cgroup string // the dev container's cgroup (a path like resources.CgroupPath returns)
}

// Cgroups are the groups' files (*Files).
type Cgroups interface {
	Setup(cg string) error
	Procs(cg string, g Group) ([]int, error)
	Move(cg string, g Group, pid int) error
	// Holds reports whether a process whose /proc/<pid>/cgroup reads
	// procCgroup is in cg or below it.
	Holds(cg string, procCgroup []byte) bool
}

// Loop sorts the processes of every running environment's dev container
// into its groups, once per tick.
type Loop struct {
	Cgroups Cgroups
	Proc    string // the proc file system, default /proc
	Params  Params // default DefaultParams
	Envs    func() []Env
	Now     func() time.Time // default time.Now
	Log     *slog.Logger
	// SetSlice, when set, gives a moved process its group's time slice
	// (Slice): SetSlice, with the real /proc. Nil leaves slices alone
	// (a test's fake /proc names no real process).
	SetSlice func(pid int, slice time.Duration) error

	envs map[string]*envState
}

type envState struct {
	cg     string
	c      *Classifier
	ready  bool
	failed string // the last error, logged once
}

// Run ticks every interval until ctx is done.
func (l *Loop) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.Tick(ctx)
		}
	}
}

func (l *Loop) init() {
	if l.envs == nil {
		l.envs = map[string]*envState{}
	}
	if l.Proc == "" {
		l.Proc = "/proc"
	}
	if l.Params == (Params{}) {
		l.Params = DefaultParams
	}
	if l.Now == nil {
		l.Now = time.Now
	}
	if l.Log == nil {
		l.Log = slog.New(slog.DiscardHandler)
	}
}

// Tick looks at every environment once and moves what must move.
func (l *Loop) Tick(ctx context.Context) {
	l.init()
	seen := map[string]bool{}
	for _, e := range l.Envs() {
		seen[e.ID] = true
		st := l.envs[e.ID]
		if st == nil || st.cg != e.Cgroup {
			st = &envState{cg: e.Cgroup, c: NewClassifier(l.Params)}
			l.envs[e.ID] = st
		}
		if err := l.tick(ctx, e, st); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				// Restarted (its cgroup made again) or stopped:
				// start again next time.
				delete(l.envs, e.ID)
				continue
			}
			if err.Error() != st.failed {
				st.failed = err.Error()
				l.Log.WarnContext(ctx, "environment's processes not sorted into CPU groups", "env", e.ID, "err", err)
			}
			continue
		}
		st.failed = ""
	}
	for id := range l.envs {
		if !seen[id] {
			delete(l.envs, id)
		}
	}
}

func (l *Loop) tick(ctx context.Context, e Env, st *envState) error {
	if !st.ready {
		if err := l.Cgroups.Setup(e.Cgroup); err != nil {
			return err
		}
		st.ready = true
	}
	var procs []Proc
	names := map[int]string{}
	for _, g := range []Group{Root, Agent, Interactive, Workload} {
		if g == Workload && !st.c.WatchesWorkload() {
			continue
		}
		pids, err := l.Cgroups.Procs(e.Cgroup, g)
		if err != nil {
			return err
		}
		for _, pid := range pids {
			s, err := readStat(l.Proc, pid)
			if err != nil {
				continue // exited
			}
			if g == Workload && !st.c.Watched(pid, s.start) {
				continue
			}
			p := Proc{PID: pid, Start: s.start, PGID: s.pgid, SID: s.sid, TTY: s.tty,
				CPU: s.cpu, ChildCPU: s.childCPU, Group: g}
			if s.tty != 0 && l.Params.DemandShare > 0 {
				// Only a terminal's processes may be demoted: the
				// others cost no extra read.
				if p.Runnable, err = readRunnable(l.Proc, pid); err != nil {
					continue // exited
				}
			}
			if g == Root || g == Agent {
				if p.Init, err = isNSInit(l.Proc, pid); err != nil {
					continue
				}
			}
			names[pid] = s.comm
			procs = append(procs, p)
		}
	}
	for _, m := range st.c.Tick(l.Now(), procs) {
		if err := l.move(ctx, e, m, names[m.PID]); err != nil {
			return err
		}
	}
	return nil
}

// move makes move m, after checking that its pid still names the process
// the classifier looked at and that this process is in the environment's
// cgroup: a pid number read from cgroup.procs may name another process
// by now (the environment's process exited, its number was reused), on
// the host or in another environment. The process is pinned by a pidfd
// while it is checked, and is checked to be alive (so its number is
// still its own) right before its pid is written. Its OOM score is raised
// and its time slice set (slice.go) before the move, so that what it forks
// in its new group inherits them.
func (l *Loop) move(ctx context.Context, e Env, m Move, name string) error {
	p, err := pin(m.PID)
	if err != nil {
		return nil // exited
	}
	defer p.close()
	if !sameProcess(l.Proc, m.PID, m.Start) || !l.holds(e.Cgroup, m.PID) || !p.alive() {
		return nil // exited; its pid may name another process now
	}
	if f := OOMFloor(m.To); f > 0 {
		if err := raiseOOMScore(l.Proc, m.PID, f); err != nil && !errors.Is(err, fs.ErrNotExist) && !isESRCH(err) {
			l.Log.DebugContext(ctx, "oom_score_adj not raised", "env", e.ID, "pid", m.PID, "err", err)
		}
	}
	if l.SetSlice != nil {
		if err := l.SetSlice(m.PID, Slice(m.To)); err != nil && !errors.Is(err, fs.ErrNotExist) && !isESRCH(err) {
			l.Log.DebugContext(ctx, "time slice not set", "env", e.ID, "pid", m.PID, "err", err)
		}
	}
	if !p.alive() {
		return nil
	}
	if err := l.Cgroups.Move(e.Cgroup, m.To, m.PID); err != nil {
		if errors.Is(err, errGone) {
			return nil
		}
		return err
	}
	l.Log.DebugContext(ctx, "process moved", "env", e.ID, "pid", m.PID, "command", name, "group", string(m.To))
	return nil
}

// holds reports whether process pid is in cg.
func (l *Loop) holds(cg string, pid int) bool {
	b, err := os.ReadFile(filepath.Join(l.Proc, strconv.Itoa(pid), "cgroup"))
	return err == nil && l.Cgroups.Holds(cg, b)
}
