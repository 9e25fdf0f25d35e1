// Package procgroups keeps an environment's terminal responsive while its
// build runs. Below the cgroup of the environment's dev container it keeps
// three CPU groups and sorts the container's processes into them, about
// once a second:
//
//   - agent: the agent (PID 1 of the environment), which carries every SSH
//     session, port forward and file transfer, at the highest weight;
//   - interactive: processes of a terminal session (they have a controlling
//     terminal: shells, editors, what is typed in them) at a high weight;
//   - workload: everything else (lifecycle commands, `cove ssh -- cmd`
//     without a terminal, services, daemons) at a low weight, and any job of
//     a terminal that burns CPU: a process group of a terminal whose
//     processes (and the children they reaped) used more than DemoteShare
//     of a CPU since the last look, or that wanted more than DemandShare
//     (were runnable, running or waiting for a CPU, that long: on a host
//     so busy that a spinner obtains little CPU it still wants all of it),
//     moves here, with everything it starts later. A demoted shell that
//     stays quiet for PromoteAfter moves back.
//
// Weights only split the CPU the environment gets among its own processes:
// the environment's share of the host, its quota and its burst stay the
// CPU control loop's (internal/cpucontrol). A process in the environment
// can claim a terminal to be sorted higher, and then only competes with
// its own environment. The groups also set an OOM order: processes moved
// to interactive get an oom_score_adj of at least 100, to workload at
// least 500, while the agent keeps its own, so an out-of-memory kill in the
// environment picks a build before a shell, and a shell before the agent.
// (Scores are only raised: lowering one needs CAP_SYS_RESOURCE.)
package procgroups

import "time"

// Group is one of the sub-cgroups of an environment's dev container.
type Group string

// The groups; Root ("") is the container's cgroup itself.
const (
	Root        Group = ""
	Agent       Group = "agent"
	Interactive Group = "interactive"
	Workload    Group = "workload"
)

// Groups are the sub-cgroups, in the order they are made.
var Groups = []Group{Agent, Interactive, Workload}

// Weight is a group's CPU weight on cgroup v2's scale (cpu.weight, 1 to
// 10000, default 100); on v1 cpu.shares is Weight*1024/100.
func Weight(g Group) uint64 {
	switch g {
	case Agent:
		return 1000
	case Interactive:
		return 500
	}
	return 10
}

// OOMFloor is the least oom_score_adj a process gets when it is moved
// into g (it is only ever raised).
func OOMFloor(g Group) int {
	switch g {
	case Interactive:
		return 100
	case Workload:
		return 500
	}
	return 0
}

// Params are the classifier's thresholds.
type Params struct {
	// DemoteShare is the share of one CPU above which a terminal's job,
	// over the time since the last look, moves to workload.
	DemoteShare float64
	// PromoteAfter is how long a demoted session leader (a shell) must
	// stay under DemoteShare before it moves back to interactive.
	PromoteAfter time.Duration
	// DemandShare is the share of one CPU above which a terminal's job,
	// over the time since the last look, that was runnable (running, or
	// ready and waiting for a CPU: /proc/<pid>/schedstat) moves to
	// workload, however little CPU it obtained (0: not used).
	DemandShare float64
}

// DefaultParams are the runner's thresholds: a quarter of a CPU
// sustained over a second is more than typing, tab completion or an editor
// use; so is being runnable half of a second (a shell that echoes a key
// sleeps again within a millisecond, even when it waited for a CPU a few
// milliseconds per key); a shell quiet for 10 s is a shell again.
var DefaultParams = Params{DemoteShare: 0.25, PromoteAfter: 10 * time.Second, DemandShare: 0.5}

// Proc is what the classifier knows of one process of the container.
type Proc struct {
	PID int
	// Start is the process's start time (clock ticks after boot): with
	// PID it names the process, whose PID may be reused once it exits.
	Start          uint64
	PGID, SID, TTY int           // TTY 0: no controlling terminal
	CPU, ChildCPU  time.Duration // its own CPU time; that of children it reaped
	// Runnable is the time it was running or waiting for a CPU (its main
	// thread's, from /proc/<pid>/schedstat; read for terminal processes).
	Runnable time.Duration
	Init     bool  // PID 1 of the environment (the agent)
	Group    Group // where it is now
}

// Move moves a process to a group.
type Move struct {
	PID   int
	Start uint64
	To    Group
}

type procKey struct {
	pid   int
	start uint64
}

type jobKey struct{ sid, pgid int }

type sample struct{ cpu, child, runnable time.Duration }

// Classifier decides, look after look, which group each process of one
// environment belongs in. It is not safe for concurrent use.
type Classifier struct {
	P Params

	last    time.Time
	prev    map[procKey]sample
	demoted map[jobKey]bool
	leaders map[procKey]time.Time // demoted session leaders: when last busy
}

// NewClassifier returns a classifier with thresholds p.
func NewClassifier(p Params) *Classifier {
	return &Classifier{P: p, prev: map[procKey]sample{}, demoted: map[jobKey]bool{}, leaders: map[procKey]time.Time{}}
}

// Watched reports whether the process in workload is one the classifier
// watches to move back (a demoted shell): the caller reads the processes
// in workload only for these.
func (c *Classifier) Watched(pid int, start uint64) bool {
	_, ok := c.leaders[procKey{pid, start}]
	return ok
}

// WatchesWorkload reports whether any process in workload is watched.
func (c *Classifier) WatchesWorkload() bool { return len(c.leaders) > 0 }

// Tick takes the processes seen at now (every process outside workload,
// and the watched ones in it) and returns the moves to make.
func (c *Classifier) Tick(now time.Time, procs []Proc) []Move {
	elapsed := now.Sub(c.last)
	first := c.last.IsZero() || elapsed <= 0
	c.last = now

	// What each process used since the last look; a process first seen
	// now started since then (every process outside workload is looked
	// at every time), so all it used counts.
	delta := make(map[procKey]sample, len(procs))
	for _, p := range procs {
		k := procKey{p.PID, p.Start}
		old, seen := c.prev[k]
		if first && !seen {
			old = sample{p.CPU, p.ChildCPU, p.Runnable}
		}
		delta[k] = sample{max(p.CPU-old.cpu, 0), max(p.ChildCPU-old.child, 0), max(p.Runnable-old.runnable, 0)}
	}
	// hot: it used more than DemoteShare of a CPU, or wanted more than
	// DemandShare.
	hot := func(d sample) bool {
		return !first && (float64(d.cpu) > c.P.DemoteShare*float64(elapsed) ||
			c.P.DemandShare > 0 && float64(d.runnable) > c.P.DemandShare*float64(elapsed))
	}

	// A terminal's jobs and what each used and wanted.
	jobCPU := map[jobKey]sample{}
	live := map[jobKey]bool{}
	for _, p := range procs {
		if p.Init || p.TTY == 0 || p.Group == Workload {
			continue
		}
		j := jobKey{p.SID, p.PGID}
		live[j] = true
		d := delta[procKey{p.PID, p.Start}]
		s := jobCPU[j]
		s.cpu += d.cpu
		s.runnable += d.runnable
		if p.PID != p.SID {
			// A shell reaps the jobs it ran: what they used is
			// theirs, not the shell's.
			s.cpu += d.child
		}
		jobCPU[j] = s
	}
	for j := range c.demoted {
		if !live[j] {
			delete(c.demoted, j)
		}
	}
	for j, d := range jobCPU {
		if hot(d) {
			c.demoted[j] = true
		}
	}

	var moves []Move
	seenLeaders := map[procKey]bool{}
	for _, p := range procs {
		k := procKey{p.PID, p.Start}
		to := p.Group
		switch {
		case p.Init:
			to = Agent
		case p.Group == Workload:
			since, watched := c.leaders[k]
			if !watched {
				continue
			}
			seenLeaders[k] = true
			if hot(sample{cpu: delta[k].cpu, runnable: delta[k].runnable}) {
				c.leaders[k] = now
			} else if now.Sub(since) >= c.P.PromoteAfter {
				to = Interactive
				delete(c.leaders, k)
				// Its job is the shell again (a loop it ran in
				// its own process group moved out with it).
				delete(c.demoted, jobKey{p.SID, p.PGID})
			}
		case p.TTY == 0:
			to = Workload
		case c.demoted[jobKey{p.SID, p.PGID}]:
			to = Workload
			if p.PID == p.SID {
				c.leaders[k] = now
				seenLeaders[k] = true
			}
		default:
			to = Interactive
		}
		if to != p.Group {
			moves = append(moves, Move{PID: p.PID, Start: p.Start, To: to})
		}
	}
	for k := range c.leaders {
		if !seenLeaders[k] {
			delete(c.leaders, k) // exited
		}
	}
	c.prev = make(map[procKey]sample, len(procs))
	for _, p := range procs {
		c.prev[procKey{p.PID, p.Start}] = sample{p.CPU, p.ChildCPU, p.Runnable}
	}
	return moves
}
