package cpucontrol

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/resources"
)

// fakeCgroups are cgroups in memory; a missing one reads and writes as
// fs.ErrNotExist.
type fakeCgroups struct {
	mu     sync.Mutex
	stats  map[string]resources.CPUStat
	limits map[string]resources.CPULimits
	sets   int
	// vanishOnSet removes a cgroup when it is written: it stopped between
	// the read and the write of one tick.
	vanishOnSet map[string]bool
}

func newFakeCgroups() *fakeCgroups {
	return &fakeCgroups{stats: map[string]resources.CPUStat{}, limits: map[string]resources.CPULimits{}, vanishOnSet: map[string]bool{}}
}

func (f *fakeCgroups) Read(p string) (resources.CPUStat, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.stats[p]
	if !ok {
		return st, fmt.Errorf("read %s: %w", p, fs.ErrNotExist)
	}
	return st, nil
}

func (f *fakeCgroups) Set(p string, l resources.CPULimits) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.vanishOnSet[p] {
		delete(f.stats, p)
	}
	if _, ok := f.stats[p]; !ok {
		return fmt.Errorf("set %s: %w", p, fs.ErrNotExist)
	}
	f.sets++
	f.limits[p] = l
	return nil
}

func (f *fakeCgroups) add(p string, st resources.CPUStat) {
	f.mu.Lock()
	f.stats[p] = st
	f.mu.Unlock()
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func testLoop(cg Cgroups, envs *[]Env, log *bytes.Buffer) (*Loop, *fakeClock) {
	clk := &fakeClock{t: time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)}
	return &Loop{
		Controller: New(Params{Capacity: 2000, MinQuota: 500}),
		Cgroups:    cg, Envs: func() []Env { return *envs }, Now: clk.now,
		Log: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, clk
}

func TestLoopAppliesAndLogsDecisions(t *testing.T) {
	cg := newFakeCgroups()
	envs := []Env{{ID: "a", Cgroup: "/cove/a", Guarantee: 500}, {ID: "b", Cgroup: "/cove/b", Guarantee: 500}}
	cg.add("/cove/a", resources.CPUStat{})
	cg.add("/cove/b", resources.CPUStat{})
	var log bytes.Buffer
	l, clk := testLoop(cg, &envs, &log)
	l.Tick(context.Background())
	if got := cg.limits["/cove/a"]; got != (resources.CPULimits{QuotaMillis: 500, WeightMillis: 500}) {
		t.Fatalf("a's first limits: %+v", got)
	}
	// a throttled for a second at its quota, b idle: a bursts.
	clk.t = clk.t.Add(time.Second)
	cg.add("/cove/a", resources.CPUStat{Usage: 500 * time.Millisecond, NrThrottled: 10})
	l.Tick(context.Background())
	if got := cg.limits["/cove/a"].QuotaMillis; got != 2000 {
		t.Errorf("a's quota after a throttled second beside an idle b: %d, want 2000", got)
	}
	if !strings.Contains(log.String(), "CPU limits changed") || !strings.Contains(log.String(), "env=a") ||
		!strings.Contains(log.String(), "burst=true") {
		t.Errorf("decision not logged at debug level:\n%s", log.String())
	}
	// Nothing changed: nothing written.
	before := cg.sets
	clk.t = clk.t.Add(time.Second)
	cg.add("/cove/a", resources.CPUStat{Usage: 2500 * time.Millisecond, NrThrottled: 20})
	l.Tick(context.Background())
	if cg.sets != before {
		t.Errorf("%d writes for unchanged limits", cg.sets-before)
	}
	// a's container restarted: a new cgroup with the class's limits and
	// counters from zero. The loop's limits are written again, though
	// they did not change.
	clk.t = clk.t.Add(time.Second)
	cg.add("/cove/b", resources.CPUStat{Usage: 10 * time.Millisecond})
	l.Tick(context.Background())
	clk.t = clk.t.Add(time.Second)
	cg.add("/cove/b", resources.CPUStat{Usage: 20 * time.Millisecond})
	l.Tick(context.Background())
	cg.limits["/cove/b"] = resources.CPULimits{QuotaMillis: 1000} // as runc made it
	clk.t = clk.t.Add(time.Second)
	cg.add("/cove/b", resources.CPUStat{})
	l.Tick(context.Background())
	if got := cg.limits["/cove/b"]; got != (resources.CPULimits{QuotaMillis: 500, WeightMillis: 500}) {
		t.Errorf("b's limits after its cgroup was made anew: %+v", got)
	}
}

// TestLoopSurvivesVanishingCgroups: environments that stop between the
// listing and the read, or between the read and the write, are skipped
// quietly; the others are still controlled, and no cgroup is made.
func TestLoopSurvivesVanishingCgroups(t *testing.T) {
	cg := newFakeCgroups()
	envs := []Env{{ID: "gone", Cgroup: "/cove/gone", Guarantee: 500}, {ID: "going", Cgroup: "/cove/going", Guarantee: 500},
		{ID: "b", Cgroup: "/cove/b", Guarantee: 500}}
	cg.add("/cove/going", resources.CPUStat{})
	cg.add("/cove/b", resources.CPUStat{})
	cg.vanishOnSet["/cove/going"] = true
	var log bytes.Buffer
	l, _ := testLoop(cg, &envs, &log)
	res := l.Tick(context.Background())
	if len(res.Decisions) != 2 {
		t.Errorf("decisions %+v; want going and b", res.Decisions)
	}
	if _, ok := cg.limits["/cove/b"]; !ok {
		t.Error("b not controlled beside vanishing neighbours")
	}
	for _, p := range []string{"/cove/gone", "/cove/going"} {
		if _, ok := cg.stats[p]; ok {
			t.Errorf("%s made again", p)
		}
	}
	if strings.Contains(log.String(), "level=WARN") {
		t.Errorf("a stopped environment logged as a failure:\n%s", log.String())
	}
}

func TestLoopLogsOtherFailuresOnce(t *testing.T) {
	envs := []Env{{ID: "a", Cgroup: "/cove/a", Guarantee: 500}}
	var log bytes.Buffer
	l, clk := testLoop(failingCgroups{}, &envs, &log)
	for range 3 {
		l.Tick(context.Background())
		clk.t = clk.t.Add(time.Second)
	}
	if n := strings.Count(log.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings for the same failure, want 1:\n%s", n, log.String())
	}
}

type failingCgroups struct{}

func (failingCgroups) Read(string) (resources.CPUStat, error) {
	return resources.CPUStat{}, fmt.Errorf("cpu.stat: permission denied")
}
func (failingCgroups) Set(string, resources.CPULimits) error { return nil }

func TestLoopRestoresClassQuotaWhenStopped(t *testing.T) {
	cg := newFakeCgroups()
	envs := []Env{{ID: "a", Cgroup: "/cove/a", Guarantee: 1000}}
	cg.add("/cove/a", resources.CPUStat{})
	var log bytes.Buffer
	l, _ := testLoop(cg, &envs, &log)
	l.Tick(context.Background())
	cg.limits["/cove/a"] = resources.CPULimits{QuotaMillis: 2000, WeightMillis: 1000} // as a burst left it
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l.Run(ctx, time.Hour) // returns at once: ctx is done
	if got := cg.limits["/cove/a"].QuotaMillis; got != 1000 {
		t.Errorf("quota after the loop stopped: %d, want the class's 1000", got)
	}
}
