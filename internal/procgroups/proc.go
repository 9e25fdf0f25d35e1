package procgroups

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// clockTick is the unit of /proc/<pid>/stat's times (USER_HZ, 100 on
// every Linux architecture the kernel exports to user space).
const clockTick = 10 * time.Millisecond

func isESRCH(err error) bool { return errors.Is(err, syscall.ESRCH) }

// procStat is what /proc/<pid>/stat says of a process.
type procStat struct {
	comm           string
	pgid, sid, tty int
	cpu, childCPU  time.Duration
	start          uint64
}

// readStat reads /proc/<pid>/stat below procRoot. The command name is
// the process's to choose (any bytes, parentheses included): the fields
// are read after its last ')'.
func readStat(procRoot string, pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (procStat, error) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procStat{}, errors.New("stat: no command name")
	}
	// After the name: state ppid pgrp session tty_nr tpgid flags minflt
	// cminflt majflt cmajflt utime stime cutime cstime priority nice
	// num_threads itrealvalue starttime …
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("stat: %d fields after the name", len(f))
	}
	n := func(i int) (int64, error) { return strconv.ParseInt(f[i], 10, 64) }
	var v [20]int64
	for _, i := range []int{2, 3, 4, 11, 12, 13, 14} {
		x, err := n(i)
		if err != nil {
			return procStat{}, fmt.Errorf("stat field %d: %w", i+3, err)
		}
		v[i] = x
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stat starttime: %w", err)
	}
	return procStat{
		comm: string(b[open+1 : end]),
		pgid: int(v[2]), sid: int(v[3]), tty: int(v[4]),
		cpu:      time.Duration(v[11]+v[12]) * clockTick,
		childCPU: time.Duration(v[13]+v[14]) * clockTick,
		start:    start,
	}, nil
}

// readRunnable reads /proc/<pid>/schedstat below procRoot: the time the
// process's main thread ran and waited on a run queue (nanoseconds), whose
// sum is how long it wanted a CPU. A kernel without schedstats shows
// zeros: the CPU rule alone then demotes.
func readRunnable(procRoot string, pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "schedstat"))
	if err != nil {
		return 0, err
	}
	return parseSchedstat(b)
}

func parseSchedstat(b []byte) (time.Duration, error) {
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, fmt.Errorf("schedstat: %d fields", len(f))
	}
	var sum uint64
	for _, x := range f[:2] {
		n, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("schedstat: %w", err)
		}
		sum += n
	}
	return time.Duration(min(sum, uint64(math.MaxInt64))), nil
}

// nsPids is the NSpid line of /proc/<pid>/status: the process's pid in
// each pid namespace it is in, the runner's first.
func nsPids(procRoot string, pid int) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "status"))
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "NSpid:"); ok {
			return strings.Fields(rest), nil
		}
	}
	return nil, errors.New("status: no NSpid")
}

// isNSInit reports whether process pid is PID 1 of a pid namespace
// directly below the runner's (the agent is PID 1 of its environment's),
// not of one nested deeper: a process in the environment may make itself
// PID 1 of a namespace of its own (unshare -p -f), which must not pass for
// the agent. procRoot's /proc/self is the runner.
func isNSInit(procRoot string, pid int) (bool, error) {
	self, err := nsPids(procRoot, os.Getpid())
	if err != nil {
		return false, err
	}
	f, err := nsPids(procRoot, pid)
	if err != nil {
		return false, err
	}
	return len(f) == len(self)+1 && f[len(f)-1] == "1", nil
}

// pinned is a process held by a pidfd: while it is alive, its pid number
// is its own.
type pinned struct{ fd int }

func pin(pid int) (pinned, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ENOSYS) {
		return pinned{fd: -1}, nil // before Linux 5.3: the checks alone
	}
	if err != nil {
		return pinned{}, err
	}
	return pinned{fd: fd}, nil
}

func (p pinned) alive() bool {
	return p.fd < 0 || unix.PidfdSendSignal(p.fd, 0, nil, 0) == nil
}

func (p pinned) close() {
	if p.fd >= 0 {
		unix.Close(p.fd)
	}
}

// sameProcess reports whether pid is still the process that started at
// start (and not a process that reused its pid).
func sameProcess(procRoot string, pid int, start uint64) bool {
	st, err := readStat(procRoot, pid)
	return err == nil && st.start == start
}

// raiseOOMScore raises process pid's oom_score_adj to floor if it is
// lower. It never lowers one.
func raiseOOMScore(procRoot string, pid, floor int) error {
	name := filepath.Join(procRoot, strconv.Itoa(pid), "oom_score_adj")
	b, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	cur, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("oom_score_adj: %w", err)
	}
	if cur >= floor {
		return nil
	}
	return os.WriteFile(name, []byte(strconv.Itoa(floor)), 0)
}
