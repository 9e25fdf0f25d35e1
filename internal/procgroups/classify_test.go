package procgroups

import (
	"slices"
	"testing"
	"time"
)

const ms = time.Millisecond

var t0 = time.Date(2026, 12, 3, 18, 0, 0, 0, time.UTC)

// The processes of one terminal session and its environment.
func agentProc() Proc { return Proc{PID: 100, Start: 1, PGID: 100, SID: 100, Init: true, Group: Root} }
func shell(g Group) Proc {
	return Proc{PID: 110, Start: 5, PGID: 110, SID: 110, TTY: 34816, Group: g}
}
func daemon() Proc { return Proc{PID: 120, Start: 6, PGID: 120, SID: 120, Group: Agent} }

func moved(ms []Move) map[int]Group {
	out := map[int]Group{}
	for _, m := range ms {
		out[m.PID] = m.To
	}
	return out
}

func wantMoves(t *testing.T, got []Move, want map[int]Group) {
	t.Helper()
	if g := moved(got); !mapsEqual(g, want) {
		t.Fatalf("moves %v, want %v", g, want)
	}
}

func mapsEqual(a, b map[int]Group) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestFirstLookSortsByKind: the agent goes to its group, a terminal's
// process to interactive, a process without a terminal to workload; the
// first look demotes nothing, whatever the processes used before it.
func TestFirstLookSortsByKind(t *testing.T) {
	c := NewClassifier(DefaultParams)
	sh := shell(Agent)
	sh.CPU = 5 * time.Second
	got := c.Tick(t0, []Proc{agentProc(), sh, daemon()})
	wantMoves(t, got, map[int]Group{100: Agent, 110: Interactive, 120: Workload})
}

// TestBusyJobIsDemoted: `make -j` typed in a shell, with compilers it
// reaps, moves to workload; the shell that ran it stays interactive,
// though it reaps make's CPU time when make ends.
func TestBusyJobIsDemoted(t *testing.T) {
	c := NewClassifier(DefaultParams)
	c.Tick(t0, []Proc{shell(Interactive)})
	makeP := Proc{PID: 200, Start: 50, PGID: 200, SID: 110, TTY: 34816, Group: Interactive}
	cc := Proc{PID: 201, Start: 51, PGID: 200, SID: 110, TTY: 34816, Group: Interactive}
	// In one second make used little itself, but reaped 900 ms of
	// compilers, and one compiler runs.
	makeP.CPU, makeP.ChildCPU, cc.CPU = 10*ms, 900*ms, 50*ms
	got := c.Tick(t0.Add(time.Second), []Proc{shell(Interactive), makeP, cc})
	wantMoves(t, got, map[int]Group{200: Workload, 201: Workload})

	// make ends: the shell reaps it all.
	sh := shell(Interactive)
	sh.ChildCPU = 30 * time.Second
	if got := c.Tick(t0.Add(2*time.Second), []Proc{sh}); len(got) != 0 {
		t.Fatalf("the shell that reaped a build moved: %v", got)
	}
}

// TestQuietJobStays: an editor using a little CPU stays interactive.
func TestQuietJobStays(t *testing.T) {
	c := NewClassifier(DefaultParams)
	vim := Proc{PID: 300, Start: 70, PGID: 300, SID: 110, TTY: 34816, Group: Interactive}
	c.Tick(t0, []Proc{shell(Interactive), vim})
	for i := 1; i <= 5; i++ {
		vim.CPU += 100 * ms // 10% of a CPU
		if got := c.Tick(t0.Add(time.Duration(i)*time.Second), []Proc{shell(Interactive), vim}); len(got) != 0 {
			t.Fatalf("look %d: moves %v", i, got)
		}
	}
}

// TestNewBusyProcessCounts: a job started since the last look counts
// all it used.
func TestNewBusyProcessCounts(t *testing.T) {
	c := NewClassifier(DefaultParams)
	c.Tick(t0, []Proc{shell(Interactive)})
	job := Proc{PID: 400, Start: 90, PGID: 400, SID: 110, TTY: 34816, CPU: 600 * ms, Group: Interactive}
	wantMoves(t, c.Tick(t0.Add(time.Second), []Proc{shell(Interactive), job}), map[int]Group{400: Workload})
}

// TestDemotedShellComesBack: a shell that loops itself moves to workload
// and comes back once quiet for PromoteAfter; other processes in workload
// are never looked at again.
func TestDemotedShellComesBack(t *testing.T) {
	p := Params{DemoteShare: 0.25, PromoteAfter: 3 * time.Second}
	c := NewClassifier(p)
	sh := shell(Interactive)
	c.Tick(t0, []Proc{sh})
	sh.CPU = 900 * ms
	wantMoves(t, c.Tick(t0.Add(time.Second), []Proc{sh}), map[int]Group{110: Workload})
	if !c.Watched(sh.PID, sh.Start) || !c.WatchesWorkload() {
		t.Fatal("demoted shell not watched")
	}
	if c.Watched(sh.PID, sh.Start+1) {
		t.Fatal("a process reusing the shell's pid is watched")
	}
	sh.Group = Workload
	sh.CPU += 900 * ms // still looping
	if got := c.Tick(t0.Add(2*time.Second), []Proc{sh}); len(got) != 0 {
		t.Fatalf("busy demoted shell moved: %v", got)
	}
	var back []int
	for i := 3; i <= 6; i++ {
		if got := c.Tick(t0.Add(time.Duration(i)*time.Second), []Proc{sh}); len(got) > 0 {
			wantMoves(t, got, map[int]Group{110: Interactive})
			back = append(back, i)
		}
	}
	if !slices.Equal(back, []int{5}) {
		t.Fatalf("shell moved back at looks %v, want at 5 (quiet since 2 s, for 3 s)", back)
	}
	if c.WatchesWorkload() {
		t.Fatal("promoted shell still watched")
	}
}

// TestPidReuseIsANewProcess: a process with the pid of one that exited
// is a new process, with nothing of the old one's history.
func TestPidReuseIsANewProcess(t *testing.T) {
	c := NewClassifier(DefaultParams)
	old := Proc{PID: 500, Start: 10, PGID: 500, SID: 110, TTY: 1, CPU: 10 * time.Second, Group: Interactive}
	c.Tick(t0, []Proc{old})
	reused := Proc{PID: 500, Start: 99, PGID: 500, SID: 110, TTY: 1, CPU: 10 * ms, Group: Interactive}
	if got := c.Tick(t0.Add(time.Second), []Proc{reused}); len(got) != 0 {
		t.Fatalf("moves %v", got)
	}
}

// TestThresholdScalesWithInterval: the share is of the time since the
// last look, however late it comes.
func TestThresholdScalesWithInterval(t *testing.T) {
	c := NewClassifier(DefaultParams)
	job := Proc{PID: 600, Start: 1, PGID: 600, SID: 110, TTY: 1, Group: Interactive}
	c.Tick(t0, []Proc{job})
	job.CPU = 900 * ms // over 5 s: 18% of a CPU
	if got := c.Tick(t0.Add(5*time.Second), []Proc{job}); len(got) != 0 {
		t.Fatalf("moves %v", got)
	}
}

// TestPromotedShellStaysWithoutJobControl: a shell without job control
// runs its commands in its own process group; once the command that made
// them both move ends and the shell is quiet, the shell comes back and
// stays back.
func TestPromotedShellStaysWithoutJobControl(t *testing.T) {
	c := NewClassifier(Params{DemoteShare: 0.25, PromoteAfter: 2 * time.Second})
	sh := shell(Interactive)
	loop := Proc{PID: 111, Start: 9, PGID: sh.PGID, SID: sh.SID, TTY: sh.TTY, Group: Interactive}
	c.Tick(t0, []Proc{sh, loop})
	loop.CPU = 900 * ms
	wantMoves(t, c.Tick(t0.Add(time.Second), []Proc{sh, loop}), map[int]Group{110: Workload, 111: Workload})
	sh.Group = Workload
	var moves []map[int]Group
	for i := 2; i <= 8; i++ {
		if got := c.Tick(t0.Add(time.Duration(i)*time.Second), []Proc{sh}); len(got) > 0 {
			moves = append(moves, moved(got))
			sh.Group = got[0].To
		}
	}
	if len(moves) != 1 || moves[0][110] != Interactive {
		t.Fatalf("shell moves %v, want one move back to interactive", moves)
	}
}

// TestStarvedJobIsDemotedByDemand: on a host so busy that a spinner typed
// in a terminal obtains only 5% of a CPU each second (under DemoteShare),
// it is runnable all the time: it moves to workload all the same. A shell
// whose keystrokes each waited a few milliseconds for a CPU stays.
func TestStarvedJobIsDemotedByDemand(t *testing.T) {
	c := NewClassifier(DefaultParams)
	sh := shell(Interactive)
	spin := Proc{PID: 700, Start: 80, PGID: 700, SID: 110, TTY: 34816, Group: Interactive}
	c.Tick(t0, []Proc{sh, spin})
	// A second: the spinner ran 50 ms and waited 950 ms on a run queue;
	// the shell echoed 50 keys, running 0.1 ms and waiting 5 ms for each.
	spin.CPU, spin.Runnable = 50*ms, time.Second
	sh.CPU, sh.Runnable = 0, 50*(5*ms+100*time.Microsecond)
	wantMoves(t, c.Tick(t0.Add(time.Second), []Proc{sh, spin}), map[int]Group{700: Workload})

	// Without the demand rule, the starved spinner would have stayed.
	c = NewClassifier(Params{DemoteShare: 0.25, PromoteAfter: 10 * time.Second})
	spin.CPU, spin.Runnable = 0, 0
	c.Tick(t0, []Proc{sh, spin})
	spin.CPU, spin.Runnable = 50*ms, time.Second
	if got := c.Tick(t0.Add(time.Second), []Proc{sh, spin}); len(got) != 0 {
		t.Fatalf("DemandShare 0 still demoted by demand: %v", got)
	}
}

// TestStarvedShellStaysDemoted: a demoted shell that still loops, starved
// in workload (it obtains almost no CPU there), is not quiet: it does not
// come back; once it sleeps it does.
func TestStarvedShellStaysDemoted(t *testing.T) {
	c := NewClassifier(Params{DemoteShare: 0.25, PromoteAfter: 2 * time.Second, DemandShare: 0.5})
	sh := shell(Interactive)
	c.Tick(t0, []Proc{sh})
	sh.CPU, sh.Runnable = 900*ms, time.Second
	wantMoves(t, c.Tick(t0.Add(time.Second), []Proc{sh}), map[int]Group{110: Workload})
	sh.Group = Workload
	for i := 2; i <= 6; i++ { // looping, 1% of a CPU, runnable throughout
		sh.CPU += 10 * ms
		sh.Runnable += time.Second
		if got := c.Tick(t0.Add(time.Duration(i)*time.Second), []Proc{sh}); len(got) != 0 {
			t.Fatalf("look %d: a starved looping shell moved back: %v", i, got)
		}
	}
	var back []int
	for i := 7; i <= 10; i++ { // asleep at the prompt
		if got := c.Tick(t0.Add(time.Duration(i)*time.Second), []Proc{sh}); len(got) > 0 {
			wantMoves(t, got, map[int]Group{110: Interactive})
			back = append(back, i)
		}
	}
	if !slices.Equal(back, []int{8}) {
		t.Fatalf("shell moved back at looks %v, want at 8 (quiet since 6 s, for 2 s)", back)
	}
}
