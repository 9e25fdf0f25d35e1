package resources

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"
)

// OOMKill is a process the kernel killed because a memory cgroup reached
// its limit, as the kernel log tells it.
type OOMKill struct {
	// Cgroup is the memory cgroup whose limit was reached (oom_memcg), a
	// path like CgroupPath returns.
	Cgroup string
	// Task is the killed process's name (its comm: chosen by whoever ran
	// it, at most 15 bytes, any bytes but NUL).
	Task string
	PID  int
}

// ParseOOMKill reads the kernel's "oom-kill:" record (a /dev/kmsg record
// or a dmesg line), e.g.
//
//	oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=x,mems_allowed=0,oom_memcg=/cove/env1,task_memcg=/cove/env1,task=dd,pid=2211,uid=0
//
// Only kills inside a memory cgroup (CONSTRAINT_MEMCG) are read. The task
// name is the process's own choice and may contain commas or "pid=": it
// is what lies between the first ",task=" after task_memcg and the last
// ",pid=". A cgroup name below an environment's cgroup is chosen inside it
// too, but the path starts with the environment's own cgroup, so the kill
// is never attributed to another environment.
func ParseOOMKill(rec string) (OOMKill, bool) {
	if _, after, ok := strings.Cut(rec, ";"); ok && !strings.HasPrefix(rec, "oom-kill:") {
		rec = after // /dev/kmsg: "prio,seq,usec,flags;message"
	}
	_, msg, ok := strings.Cut(rec, "oom-kill:")
	if !ok || !strings.HasPrefix(msg, "constraint=CONSTRAINT_MEMCG,") {
		return OOMKill{}, false
	}
	msg = strings.TrimRight(msg, "\n")
	_, rest, ok := strings.Cut(msg, ",oom_memcg=")
	if !ok {
		return OOMKill{}, false
	}
	memcg, rest, ok := strings.Cut(rest, ",task_memcg=")
	if !ok {
		return OOMKill{}, false
	}
	_, rest, ok = strings.Cut(rest, ",task=")
	if !ok {
		return OOMKill{}, false
	}
	i := strings.LastIndex(rest, ",pid=")
	if i < 0 {
		return OOMKill{}, false
	}
	task, tail := rest[:i], rest[i+len(",pid="):]
	pidStr, _, _ := strings.Cut(tail, ",")
	pid, err := strconv.Atoi(pidStr)
	if err != nil || !strings.HasPrefix(memcg, "/") {
		return OOMKill{}, false
	}
	return OOMKill{Cgroup: filepath.Clean(memcg), Task: task, PID: pid}, true
}

// OOMKills reads the OOM kills in memory cgroups that the kernel logs
// from /dev/kmsg (root).
type OOMKills struct{ kmsg *os.File }

// OpenOOMKills opens the kernel log at its end: Watch reports the kills
// from then on.
func OpenOOMKills() (*OOMKills, error) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("kernel log for OOM kills: %w", err)
	}
	if _, err := unix.Seek(fd, 0, io.SeekEnd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("kernel log for OOM kills: %w", err)
	}
	// os.NewFile with a non-blocking descriptor uses the poller, so a
	// read returns when a record comes or the file is closed.
	return &OOMKills{kmsg: os.NewFile(uintptr(fd), "/dev/kmsg")}, nil
}

// Watch calls f with every OOM kill in a memory cgroup until ctx is done,
// then closes the log. Records lost because the kernel's buffer wrapped
// are skipped.
func (w *OOMKills) Watch(ctx context.Context, f func(OOMKill)) error {
	stop := context.AfterFunc(ctx, func() { w.kmsg.Close() })
	defer stop()
	buf := make([]byte, 8192) // a record is at most 8 KiB (CONSOLE_EXT_LOG_MAX)
	for {
		n, err := w.kmsg.Read(buf)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, syscall.EPIPE):
			continue // overwritten records
		case err != nil:
			w.kmsg.Close()
			return fmt.Errorf("watch OOM kills: %w", err)
		}
		if k, ok := ParseOOMKill(string(buf[:n])); ok {
			f(k)
		}
	}
}

// MemoryLimit is the memory limit of cgroup p (0: none).
func MemoryLimit(p string) (int64, error) {
	f := filepath.Join(cgroupRoot, "memory", p, "memory.limit_in_bytes")
	if cgroups.Mode() == cgroups.Unified {
		f = filepath.Join(cgroupRoot, p, "memory.max")
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("memory limit of %s: %q: %w", p, s, err)
	}
	if n >= math.MaxInt64-1<<20 { // v1's "unlimited", rounded to pages
		return 0, nil
	}
	return n, nil
}
