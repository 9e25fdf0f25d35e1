package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
	"golang.org/x/sys/unix"
)

// measurement is one case: A's write+fsync latencies and what B achieved
// while A measured.
type measurement struct {
	policy, load string
	writers      bool // B ran its writers
	lat          []time.Duration
	// B's writers during A's measurement, as they counted it: bytes
	// written (returned by write) and fsynced, over window.
	written, synced int64
	window          time.Duration
	// Read on the host over hostWindow: bytes written charged to B's
	// cgroup (what its IO limits can act on) and bytes the whole disk
	// wrote (every writer on the host, cove's or not).
	charged, disk uint64
	hostWindow    time.Duration
}

// hostReading is the host's counters at one moment.
type hostReading struct {
	at            time.Time
	charged, disk uint64
}

// measure runs case l: B's writers if l has them, then A's probe.
func (s *session) measure(ctx context.Context, l load) (m measurement, err error) {
	m = measurement{policy: s.p.name, load: l.name, writers: l.writers}
	// Each case starts with nothing of the one before left to write back.
	if err := s.syncfs(); err != nil {
		return m, err
	}
	var w *bWriters
	if l.writers {
		benchkit.Progress("%s, %s: starting %d writers in %s", s.p.name, l.name, s.f.o.writers, envB)
		if w, err = s.startWriters(l.fsyncEvery); err != nil {
			return m, err
		}
		defer func() { err = errors.Join(err, w.stop()) }()
		want, err := s.warmBytes(l)
		if err != nil {
			return m, err
		}
		if err := w.warmUp(ctx, want, s.f.o.settle, s.f.o.settleMax); err != nil {
			return m, err
		}
	}
	benchkit.Progress("%s, %s: %d × (%d bytes + fsync) in %s", s.p.name, l.name, s.f.o.n, s.f.o.size, envA)
	var mk0, mk1 mark
	if w != nil {
		if mk0, err = w.mark(ctx); err != nil {
			return m, err
		}
	}
	h0, err := s.readHost()
	if err != nil {
		return m, err
	}
	if m.lat, err = s.probe(ctx, s.f.o.n); err != nil {
		return m, err
	}
	h1, err := s.readHost()
	if err != nil {
		return m, err
	}
	if w != nil {
		if mk1, err = w.mark(ctx); err != nil {
			return m, err
		}
	}
	m.written, m.synced, m.window = mk1.written-mk0.written, mk1.synced-mk0.synced, mk1.at-mk0.at
	m.charged, m.disk, m.hostWindow = h1.charged-h0.charged, h1.disk-h0.disk, h1.at.Sub(h0.at)
	return m, nil
}

// warmBytes is what B's writers must have written before A measures, so
// that their writes are in their steady state: with fsyncs, two rounds of
// fsyncs; without, past the kernel's dirty threshold (from then on the
// kernel holds B's writes to the pace of their writeback, before they
// only fill memory).
func (s *session) warmBytes(l load) (int64, error) {
	o := s.f.o
	if l.fsyncEvery > 0 {
		return 2 * int64(o.writers) * l.fsyncEvery, nil
	}
	c, err := s.usage.Read(s.bID)
	if err != nil {
		return 0, err
	}
	meminfo, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	ratio, err := os.ReadFile("/proc/sys/vm/dirty_ratio")
	if err != nil {
		return 0, err
	}
	dirtyBytes, err := os.ReadFile("/proc/sys/vm/dirty_bytes")
	if err != nil {
		return 0, err
	}
	t, err := dirtyThreshold(meminfo, ratio, dirtyBytes, c.MemoryLimit, benchkit.CgroupV2())
	return t + int64(o.writers)*o.block, err
}

// probe runs A's write+fsync loop n times and returns its latencies.
func (s *session) probe(ctx context.Context, n int) ([]time.Duration, error) {
	out, err := s.ssh(ctx, envA, nil, fmt.Sprintf("%s fsync -file %s -n %d -size %d -gap %s -max %s",
		probePath, path.Join(s.wsA, ".ioprobe-fsync"), n, s.f.o.size, s.f.o.gap, s.f.o.probeMax))
	if err != nil {
		return nil, fmt.Errorf("fsync probe in %s: %w", envA, err)
	}
	lat, err := parseLatencies(out)
	if err != nil {
		return nil, fmt.Errorf("fsync probe in %s: %w", envA, err)
	}
	// Fewer when -probe-max ran out (the report shows how many).
	if len(lat) == 0 || len(lat) > n {
		return nil, fmt.Errorf("fsync probe in %s: %d latencies, want 1 to %d", envA, len(lat), n)
	}
	return lat, nil
}

// readHost reads the bytes charged to B's cgroup and the disk's.
func (s *session) readHost() (hostReading, error) {
	r := hostReading{at: time.Now()}
	c, err := s.usage.Read(s.bID)
	if err != nil {
		return r, err
	}
	r.charged = c.IOWrite
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/stat", s.f.diskMajor, s.f.diskMin))
	if err != nil {
		return r, err
	}
	if r.disk, err = parseDiskWritten(b); err != nil {
		return r, fmt.Errorf("disk %d:%d: %w", s.f.diskMajor, s.f.diskMin, err)
	}
	return r, nil
}

// syncfs writes back the dirty pages of the data dir's file system.
func (s *session) syncfs() error {
	f, err := os.Open(s.dataFS)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", s.dataFS, err)
	}
	return nil
}

func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// dirtyThreshold is the dirty page cache at which the kernel starts
// holding a writer to the pace of writeback: vm.dirty_bytes, or
// vm.dirty_ratio percent of the available memory; on cgroup v2 (whose
// memory controller throttles dirty pages per cgroup) at most that percent
// of the writer's cgroup memory limit (0: none).
func dirtyThreshold(meminfo, ratio, dirtyBytes []byte, memLimit uint64, v2 bool) (int64, error) {
	if b, err := strconv.ParseInt(strings.TrimSpace(string(dirtyBytes)), 10, 64); err == nil && b > 0 {
		return b, nil
	}
	r, err := strconv.ParseInt(strings.TrimSpace(string(ratio)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("vm.dirty_ratio %q: %w", strings.TrimSpace(string(ratio)), err)
	}
	var avail int64 = -1
	for _, line := range strings.Split(string(meminfo), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kib, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("meminfo %q: %w", line, err)
			}
			avail = kib << 10
		}
	}
	if avail < 0 {
		return 0, fmt.Errorf("no MemAvailable in /proc/meminfo")
	}
	if v2 && memLimit > 0 && int64(memLimit) < avail {
		avail = int64(memLimit)
	}
	return avail / 100 * r, nil
}
