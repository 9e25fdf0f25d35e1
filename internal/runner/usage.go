package runner

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/covedev/cove/internal/resources"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Usage in status: every UsageConfig.Interval the runner reads each running
// environment's cgroup (all its containers together) and turns the
// counters into status.usage. A status report is a store write that wakes
// every watcher, so a sample goes out only when it differs meaningfully
// from the one reported last (usageChanged), or when that one is older than
// usageRefresh intervals. Reports re-send the last status with the new
// usage, like port changes (ports.go); they never wake the worker's loop.
//
// Disk use (status.usage.disk_bytes and disk_limit_bytes) is the used and
// total size of the environment's disk (disk.go), one statfs. An
// environment without a disk of its own reports none: sizing its
// workspace, upper directory and volumes would take a walk of trees it can
// grow without bound.

// UsageReader reads the cumulative counters of an environment's cgroup
// (resources.UsageReader); resources.ErrNoCgroup when it has none.
type UsageReader interface {
	Read(id string) (resources.Counters, error)
}

const (
	defaultUsageInterval = 30 * time.Second
	// usageRefresh: a usage that has not changed meaningfully is reported
	// again after this many intervals, so that its time stays recent.
	usageRefresh = 10
)

// usageSample is one reading of an environment's counters.
type usageSample struct {
	at time.Time
	c  resources.Counters
	// disk and diskLimit are the environment's disk's used and total
	// bytes (0: it has none).
	disk, diskLimit int64
}

// usageState is a worker's view of its environment's usage, guarded by
// worker.mu.
type usageState struct {
	prev    *usageSample          // the last reading; nil before the first
	shown   *covev1.ResourceUsage // what statuses carry
	pending bool                  // a usage report is queued
	// The last process killed for lack of memory (oomreport.go).
	lastOOM   string
	lastOOMAt time.Time
}

// usageBetween turns two readings into a usage: CPU cores and throttled
// time over the interval between them, the rest as read at cur. A counter
// lower than before started again from zero (the environment restarted and
// its cgroup was made anew): its whole value counts, as in Prometheus'
// rate(). Without prev there is no interval, hence no CPU figure: ok is
// false.
func usageBetween(prev *usageSample, cur usageSample) (u *covev1.ResourceUsage, ok bool) {
	c := cur.c
	u = &covev1.ResourceUsage{
		SampledAt:        timestamppb.New(cur.at.Truncate(time.Second)),
		CpuLimitCores:    c.CPULimit,
		MemoryBytes:      clampInt64(c.Memory),
		MemoryLimitBytes: clampInt64(c.MemoryLimit),
		IoReadBytes:      clampInt64(c.IORead),
		IoWriteBytes:     clampInt64(c.IOWrite),
		Pids:             clampInt32(c.Pids),
		PidsLimit:        clampInt32(c.PidsLimit),
		OomKills:         clampInt32(c.OOMKills),
		DiskBytes:        cur.disk,
		DiskLimitBytes:   cur.diskLimit,
	}
	if prev == nil || !cur.at.After(prev.at) {
		return u, false
	}
	elapsed := cur.at.Sub(prev.at)
	u.CpuCores = math.Round(float64(since(prev.c.CPU, c.CPU))/float64(elapsed)*1000) / 1000
	u.CpuThrottledMs = since(prev.c.Throttled, c.Throttled).Milliseconds()
	return u, true
}

// since is how much a counter grew from prev to cur, or cur if it started
// again from zero.
func since(prev, cur time.Duration) time.Duration {
	if cur < prev {
		return cur
	}
	return cur - prev
}

// usageChanged reports whether u is worth a status report after old: a
// memory, pids or disk limit or the OOM kill count changed, a CPU limit
// came or went, a figure (the CPU limit included) moved by more than both
// an absolute floor and a tenth of its old value, or old is stale (at
// least stale old).
func usageChanged(old, u *covev1.ResourceUsage, stale time.Duration) bool {
	if old == nil {
		return true
	}
	if old.MemoryLimitBytes != u.MemoryLimitBytes || old.PidsLimit != u.PidsLimit ||
		old.DiskLimitBytes != u.DiskLimitBytes || old.OomKills != u.OomKills ||
		(old.CpuLimitCores == 0) != (u.CpuLimitCores == 0) {
		return true
	}
	if u.SampledAt.AsTime().Sub(old.SampledAt.AsTime()) >= stale {
		return true
	}
	moved := func(a, b, floor float64) bool {
		d := math.Abs(b - a)
		return d >= floor && d >= math.Abs(a)/10
	}
	const mib = 1 << 20
	// The CPU control loop moves quotas every second: a small move is not
	// worth a report.
	return moved(old.CpuLimitCores, u.CpuLimitCores, 0.1) || moved(old.CpuCores, u.CpuCores, 0.05) ||
		(old.CpuThrottledMs == 0) != (u.CpuThrottledMs == 0) || moved(float64(old.CpuThrottledMs), float64(u.CpuThrottledMs), 1000) ||
		moved(float64(old.MemoryBytes), float64(u.MemoryBytes), 16*mib) ||
		moved(float64(old.IoReadBytes), float64(u.IoReadBytes), 16*mib) ||
		moved(float64(old.IoWriteBytes), float64(u.IoWriteBytes), 16*mib) ||
		moved(float64(old.Pids), float64(u.Pids), 4) ||
		moved(float64(old.DiskBytes), float64(u.DiskBytes), 64*mib)
}

// UsageConfig configures StartUsage.
type UsageConfig struct {
	// Reader reads environments' cgroups (nil: no usage in status, and
	// no per-environment metrics).
	Reader UsageReader
	// Interval is how often status.usage is sampled (default 30 s).
	Interval time.Duration
	// MetricsListen, if set, is where /metrics is served (metrics.go).
	MetricsListen string
}

// StartUsage samples the running environments' usage into their status
// and serves metrics, as cfg says, until ctx is done or the returned
// function (which waits for both to end) is called.
func (r *Runner) StartUsage(ctx context.Context, cfg UsageConfig) (stop func(), err error) {
	if cfg.Interval <= 0 {
		cfg.Interval = defaultUsageInterval
	}
	metrics, err := r.startMetrics(cfg.MetricsListen, cfg.Reader)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if cfg.Reader != nil {
			r.usageLoop(ctx, cfg.Reader, cfg.Interval)
		}
	}()
	return func() {
		cancel()
		<-done
		metrics.Close()
	}, nil
}

// usageLoop samples the running environments' usage every interval until
// ctx is done.
func (r *Runner) usageLoop(ctx context.Context, u UsageReader, interval time.Duration) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.clock.After(interval):
		}
		r.sampleUsage(ctx, u, interval)
	}
}

// sampleUsage reads every running environment's counters once and hands
// them to its worker; a worker whose environment is not running forgets
// its readings (a restart begins a new series).
func (r *Runner) sampleUsage(ctx context.Context, u UsageReader, interval time.Duration) {
	for _, w := range r.workerList() {
		if ctx.Err() != nil {
			return
		}
		if !w.isRunning() {
			w.forgetUsage()
			continue
		}
		c, err := u.Read(w.id)
		if err != nil {
			if !errors.Is(err, resources.ErrNoCgroup) {
				r.log.Debug("usage not read", "env", w.id, "err", err)
			}
			w.forgetUsage()
			continue
		}
		// The report belongs to the worker: it ends with it.
		s := usageSample{at: r.clock.Now(), c: c}
		if used, size, ok := r.diskUsage(w.id); ok { // disk.go
			s.disk, s.diskLimit = used, size
		}
		w.setUsage(w.ctx, s, usageRefresh*interval)
	}
}

// workerList is a snapshot of the workers.
func (r *Runner) workerList() []*worker {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*worker, 0, len(r.workers))
	for _, w := range r.workers {
		out = append(out, w)
	}
	return out
}

func (w *worker) forgetUsage() {
	w.mu.Lock()
	w.usage.prev, w.usage.shown = nil, nil
	w.usage.lastOOM, w.usage.lastOOMAt = "", time.Time{}
	w.mu.Unlock()
}

// noteOOMKill records msg, a process of the environment killed for lack
// of memory at at, and reports it with the usage (at once if a usage is
// shown already; else the next sample, which counts the kill, carries it).
func (w *worker) noteOOMKill(msg string, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.usage.lastOOM, w.usage.lastOOMAt = msg, at
	if w.usage.shown == nil || w.usage.pending {
		return
	}
	w.usage.pending = true
	go w.reportUsage(w.ctx)
}

// setUsage records a reading and, if the usage it gives changed
// meaningfully, queues a report.
func (w *worker) setUsage(ctx context.Context, s usageSample, stale time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	u, ok := usageBetween(w.usage.prev, s)
	w.usage.prev = &s
	if !ok || !usageChanged(w.usage.shown, u, stale) {
		return
	}
	w.usage.shown = u
	if w.usage.pending {
		return // the queued report will carry it
	}
	w.usage.pending = true
	go w.reportUsage(ctx)
}

// reportUsage re-sends the last reported status with the current usage,
// only while that status says RUNNING.
func (w *worker) reportUsage(ctx context.Context) { w.resendRunning(ctx, &w.usage.pending, "usage") }

// decorateUsage sets st.Usage: the usage shown while running, none
// otherwise. Callers hold w.mu.
func (w *worker) decorateUsage(st *covev1.EnvironmentStatus) {
	st.Usage = nil
	if st.Phase == phaseRunning && w.usage.shown != nil {
		st.Usage = proto.Clone(w.usage.shown).(*covev1.ResourceUsage)
		if w.usage.lastOOM != "" {
			st.Usage.LastOomKill, st.Usage.LastOomKillAt = w.usage.lastOOM, timestamppb.New(w.usage.lastOOMAt)
		}
	}
}

func clampInt64(v uint64) int64 {
	return int64(min(v, math.MaxInt64))
}

func clampInt32(v uint64) int32 {
	return int32(min(v, math.MaxInt32))
}
