package runner

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestUsageBetween(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	const gib = 1 << 30
	base := resources.Counters{CPU: 10 * time.Second, Throttled: 2 * time.Second, CPULimit: 2,
		Memory: gib, MemoryLimit: 4 * gib, IORead: 100, IOWrite: 200, Pids: 9, PidsLimit: 512, OOMKills: 1}
	later := base
	later.CPU += 3 * time.Second // 3 s of CPU over 4 s: 0.75 cores
	later.Throttled += 1500 * time.Millisecond
	restarted := resources.Counters{CPU: 2 * time.Second, Throttled: 300 * time.Millisecond}
	huge := resources.Counters{Memory: math.MaxUint64, Pids: math.MaxUint64}
	for _, c := range []struct {
		name          string
		prev          *usageSample
		cur           usageSample
		ok            bool
		cores         float64
		throttledMs   int64
		memory, pids  int64
		limitCores    float64
		memLimit, oom int64
	}{
		{name: "first reading: no interval, no CPU figure", cur: usageSample{at: t0, c: base}, memory: gib, pids: 9, limitCores: 2, memLimit: 4 * gib, oom: 1},
		{name: "over an interval", prev: &usageSample{at: t0, c: base}, cur: usageSample{at: t0.Add(4 * time.Second), c: later}, ok: true,
			cores: 0.75, throttledMs: 1500, memory: gib, pids: 9, limitCores: 2, memLimit: 4 * gib, oom: 1},
		// The environment restarted: its new cgroup's counters count
		// from zero, as Prometheus' rate() counts a reset.
		{name: "counters reset", prev: &usageSample{at: t0, c: base}, cur: usageSample{at: t0.Add(4 * time.Second), c: restarted}, ok: true,
			cores: 0.5, throttledMs: 300},
		{name: "no time passed", prev: &usageSample{at: t0, c: base}, cur: usageSample{at: t0, c: later},
			memory: gib, pids: 9, limitCores: 2, memLimit: 4 * gib, oom: 1},
		{name: "figures past the proto's range are clamped", cur: usageSample{at: t0, c: huge}, memory: math.MaxInt64, pids: math.MaxInt32},
	} {
		t.Run(c.name, func(t *testing.T) {
			u, ok := usageBetween(c.prev, c.cur)
			if ok != c.ok || u.CpuCores != c.cores || u.CpuThrottledMs != c.throttledMs || u.MemoryBytes != c.memory ||
				int64(u.Pids) != c.pids || u.CpuLimitCores != c.limitCores || u.MemoryLimitBytes != c.memLimit || int64(u.OomKills) != c.oom {
				t.Errorf("usageBetween = %v, %v; want ok %v, cores %v, throttled %d ms, memory %d, pids %d, limit %v cores, %d bytes, oom %d",
					u, ok, c.ok, c.cores, c.throttledMs, c.memory, c.pids, c.limitCores, c.memLimit, c.oom)
			}
			if !u.SampledAt.AsTime().Equal(c.cur.at) {
				t.Errorf("sampled at %v, want %v", u.SampledAt.AsTime(), c.cur.at)
			}
		})
	}
}

func TestUsageChanged(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	const mib = 1 << 20
	old := &covev1.ResourceUsage{SampledAt: timestamppb.New(t0), CpuCores: 1, CpuLimitCores: 2, MemoryBytes: 1024 * mib,
		MemoryLimitBytes: 4096 * mib, IoReadBytes: 100 * mib, IoWriteBytes: 100 * mib, Pids: 40, PidsLimit: 512}
	const stale = 5 * time.Minute
	next := func(f func(u *covev1.ResourceUsage)) *covev1.ResourceUsage {
		u := &covev1.ResourceUsage{SampledAt: timestamppb.New(t0.Add(30 * time.Second)), CpuCores: old.CpuCores, CpuLimitCores: old.CpuLimitCores,
			MemoryBytes: old.MemoryBytes, MemoryLimitBytes: old.MemoryLimitBytes, IoReadBytes: old.IoReadBytes, IoWriteBytes: old.IoWriteBytes,
			Pids: old.Pids, PidsLimit: old.PidsLimit}
		f(u)
		return u
	}
	for _, c := range []struct {
		name string
		u    *covev1.ResourceUsage
		want bool
	}{
		{"same figures", next(func(*covev1.ResourceUsage) {}), false},
		{"CPU jitter", next(func(u *covev1.ResourceUsage) { u.CpuCores = 1.04 }), false},
		{"CPU moved", next(func(u *covev1.ResourceUsage) { u.CpuCores = 1.5 }), true},
		{"memory jitter", next(func(u *covev1.ResourceUsage) { u.MemoryBytes += 8 * mib }), false},
		{"memory moved", next(func(u *covev1.ResourceUsage) { u.MemoryBytes *= 2 }), true},
		{"small absolute IO change on little IO", next(func(u *covev1.ResourceUsage) { u.IoWriteBytes += 12 * mib }), false},
		{"IO moved", next(func(u *covev1.ResourceUsage) { u.IoWriteBytes += 200 * mib }), true},
		{"throttling began", next(func(u *covev1.ResourceUsage) { u.CpuThrottledMs = 10 }), true},
		{"pids moved", next(func(u *covev1.ResourceUsage) { u.Pids = 80 }), true},
		{"CPU limit changed", next(func(u *covev1.ResourceUsage) { u.CpuLimitCores = 1.5 }), true},
		{"CPU limit nudged by the control loop", next(func(u *covev1.ResourceUsage) { u.CpuLimitCores = 2.05 }), false},
		{"CPU limit lifted", next(func(u *covev1.ResourceUsage) { u.CpuLimitCores = 0 }), true},
		{"memory limit changed", next(func(u *covev1.ResourceUsage) { u.MemoryLimitBytes = 0 }), true},
		{"an OOM kill", next(func(u *covev1.ResourceUsage) { u.OomKills = 1 }), true},
		{"old report stale", next(func(u *covev1.ResourceUsage) { u.SampledAt = timestamppb.New(t0.Add(stale)) }), true},
	} {
		if got := usageChanged(old, c.u, stale); got != c.want {
			t.Errorf("%s: usageChanged = %v, want %v", c.name, got, c.want)
		}
	}
	if !usageChanged(nil, old, stale) {
		t.Error("first usage not worth a report")
	}
}

// fakeUsage is a UsageReader over fixed counters.
type fakeUsage struct {
	mu sync.Mutex
	c  map[string]resources.Counters
}

func (f *fakeUsage) set(id string, c resources.Counters) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.c[id] = c
}

func (f *fakeUsage) Read(id string) (resources.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.c[id]
	if !ok {
		return c, resources.ErrNoCgroup
	}
	return c, nil
}

// stepClock is a clock moved on by the test.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}
func (c *stepClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c *stepClock) After(time.Duration) <-chan time.Time {
	return make(chan time.Time) // the tests call sampleUsage themselves
}
func (c *stepClock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

const interval = 30 * time.Second

// usageRunner is a runner with one worker whose environment reported
// RUNNING to a recording server; the worker's loop is not started, so
// that the test sees whether anything woke it.
func usageRunner(t *testing.T) (*Runner, *worker, *statusRecorder, *stepClock) {
	t.Helper()
	rec := &statusRecorder{got: make(chan *covev1.EnvironmentStatus, 100)}
	path, h := covev1connect.NewRunnerServiceHandler(rec)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	clk := &stepClock{now: time.Unix(1e9, 0)}
	r := &Runner{
		cfg: Config{DataDir: t.TempDir()}, log: slog.New(slog.DiscardHandler), clock: clk,
		client:  &client{api: covev1connect.NewRunnerServiceClient(srv.Client(), srv.URL)},
		workers: map[string]*worker{},
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w := &worker{r: r, id: "env1", ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1),
		content: &covev1.SubStatus{}, machine: &covev1.SubStatus{}, env: &covev1.Environment{Id: "env1"}}
	r.workers[w.id] = w
	must(t, w.setStatus(testutil.Context(t), &covev1.EnvironmentStatus{Phase: phaseRunning}))
	<-rec.got
	w.mu.Lock()
	w.running = true // without the port watch setRunning starts
	w.mu.Unlock()
	return r, w, rec, clk
}

// usagePending reports whether a usage report is queued or being sent.
func usagePending(w *worker) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.usage.pending
}

func TestUsageReported(t *testing.T) {
	const gib = 1 << 30
	f := &fakeUsage{c: map[string]resources.Counters{}}
	r, w, rec, clk := usageRunner(t)
	ctx := testutil.Context(t)
	c := resources.Counters{CPU: time.Minute, CPULimit: 2, Memory: gib, MemoryLimit: 4 * gib, Pids: 10, PidsLimit: 512}
	f.set("env1", c)

	// The first reading has no interval to average CPU over: no report.
	r.sampleUsage(ctx, f, interval)
	if usagePending(w) {
		t.Fatal("a report was queued after the first reading")
	}

	// 15 s of CPU over 30 s: half a core.
	clk.add(interval)
	c.CPU += 15 * time.Second
	f.set("env1", c)
	r.sampleUsage(ctx, f, interval)
	st := testutil.Receive(t, rec.got, "a report with the usage")
	u := st.GetUsage()
	if st.GetPhase() != phaseRunning || u.GetCpuCores() != 0.5 || u.GetCpuLimitCores() != 2 || u.GetMemoryBytes() != gib ||
		u.GetMemoryLimitBytes() != 4*gib || u.GetPids() != 10 || u.GetPidsLimit() != 512 || u.GetDiskBytes() != 0 {
		t.Errorf("reported %v with usage %v", st.GetPhase(), u)
	}

	// Nothing moved: no report (the check is synchronous: a report is
	// queued, or not, before sampleUsage returns).
	clk.add(interval)
	c.CPU += 15 * time.Second
	f.set("env1", c)
	r.sampleUsage(ctx, f, interval)
	if usagePending(w) || len(rec.got) > 0 {
		t.Fatal("a report was queued for an unchanged usage")
	}

	// An OOM kill is always worth a report.
	clk.add(interval)
	c.CPU += 15 * time.Second
	c.OOMKills = 1
	f.set("env1", c)
	r.sampleUsage(ctx, f, interval)
	if u := testutil.Receive(t, rec.got, "a report of the OOM kill").GetUsage(); u.GetOomKills() != 1 {
		t.Errorf("OOM kill reported as %v", u)
	}

	// The kernel's message about it names the process: reported at once,
	// as the log line says it.
	r.reportOOMKill(resources.OOMKill{Cgroup: "/cove/env1", Task: "postgres", PID: 9})
	if u := testutil.Receive(t, rec.got, "a report of the killed process").GetUsage(); !strings.HasPrefix(u.GetLastOomKill(), "postgres was killed: out of memory") ||
		u.GetLastOomKillAt() == nil || u.GetOomKills() != 1 {
		t.Errorf("last OOM kill reported as %v", u)
	}

	// Another pass of the reconcile loop re-sends the same status: the
	// usage it carries is the one shown, so nothing goes out. (sendMu:
	// the usage report has finished, w.reported is its status.)
	w.sendMu.Lock()
	w.sendMu.Unlock() //nolint:staticcheck // an empty critical section: wait for the send
	w.mu.Lock()
	last := w.reported
	w.mu.Unlock()
	must(t, w.setStatus(ctx, &covev1.EnvironmentStatus{Phase: phaseRunning}))
	w.mu.Lock()
	same := w.reported == last
	w.mu.Unlock()
	if !same || len(rec.got) > 0 {
		t.Error("the periodic status was sent again though nothing changed")
	}

	// Its own reports never wake the worker's loop.
	if len(w.kick) > 0 {
		t.Error("a usage report woke the worker's loop")
	}

	// Stopped: no usage in status, and the readings are forgotten so a
	// restart begins a new series.
	w.mu.Lock()
	w.running = false
	w.mu.Unlock()
	r.sampleUsage(ctx, f, interval)
	must(t, w.setStatus(ctx, &covev1.EnvironmentStatus{Phase: phaseStopped}))
	if st := testutil.Receive(t, rec.got, "the stopped status"); st.GetUsage() != nil {
		t.Errorf("stopped status carries usage %v", st.GetUsage())
	}
	w.mu.Lock()
	forgotten := w.usage.prev == nil && w.usage.shown == nil
	w.mu.Unlock()
	if !forgotten {
		t.Error("usage readings kept after the environment stopped")
	}
}

// A usage reader that fails (a cgroup gone with its environment) leaves
// the status alone.
func TestUsageNoCgroupReportsNothing(t *testing.T) {
	f := &fakeUsage{c: map[string]resources.Counters{}}
	r, w, rec, clk := usageRunner(t)
	ctx := testutil.Context(t)
	for range 3 {
		r.sampleUsage(ctx, f, interval)
		clk.add(interval)
	}
	if usagePending(w) || len(rec.got) > 0 {
		t.Error("a report was queued without a cgroup")
	}
}

// StartUsage's stop function ends the sampling loop and the metrics
// listener; a listener it cannot serve on is an error at start.
func TestStartUsage(t *testing.T) {
	r := &Runner{log: slog.New(slog.DiscardHandler), clock: realClock{}, workers: map[string]*worker{}}
	stop, err := r.StartUsage(testutil.Context(t), UsageConfig{Reader: &fakeUsage{c: map[string]resources.Counters{}}, MetricsListen: "127.0.0.1:0"})
	must(t, err)
	stop() // returns once the loop has ended
	if _, err := r.StartUsage(testutil.Context(t), UsageConfig{MetricsListen: "nonsense"}); err == nil || !strings.Contains(err.Error(), "--metrics-listen") {
		t.Errorf("StartUsage with a bad listen address: %v", err)
	}
}
