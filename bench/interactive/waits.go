package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

// The processes on a keystroke's path, in the order it crosses them.
var roles = []string{"ssh client", "ProxyCommand", "cove up", "agent", "shell"}

// pathPids are the processes on a keystroke's path by role: the OpenSSH
// client, its ProxyCommand (`cove ssh --stdio`), `cove up` (the SSH
// gateway and the runner), A's agent (PID 1 of its pid namespace) and A's
// shells (A's processes with a terminal).
func (s *session) pathPids() map[string][]int {
	out := map[string][]int{"ssh client": {s.term.cmd.Process.Pid}, "cove up": {s.cv.Pid()}}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := procStat(pid); ok && st.ppid == s.term.cmd.Process.Pid {
			out["ProxyCommand"] = append(out["ProxyCommand"], pid)
		}
	}
	dir := filepath.Join("/sys/fs/cgroup/cpu", s.aCgroup)
	if benchkit.CgroupV2() {
		dir = filepath.Join("/sys/fs/cgroup", s.aCgroup)
	}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			st, ok := procStat(pid)
			switch {
			case !ok:
			case isNSInit(pid):
				out["agent"] = append(out["agent"], pid)
			case st.tty != 0:
				out["shell"] = append(out["shell"], pid)
			}
		}
		return nil
	})
	return out
}

type pstat struct{ ppid, tty int }

// procStat reads the parent and the controlling terminal of pid.
func procStat(pid int) (pstat, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return pstat{}, false
	}
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return pstat{}, false
	}
	f := strings.Fields(string(b[end+1:])) // state ppid pgrp session tty_nr …
	if len(f) < 5 {
		return pstat{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	tty, err2 := strconv.Atoi(f[4])
	return pstat{ppid, tty}, err1 == nil && err2 == nil
}

// isNSInit reports whether pid is PID 1 of its pid namespace.
func isNSInit(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "NSpid:"); ok {
			f := strings.Fields(rest)
			return len(f) > 1 && f[len(f)-1] == "1"
		}
	}
	return false
}

// waited is how long the threads of pids waited on a run queue for a CPU
// so far (the second field of /proc/<pid>/task/<tid>/schedstat).
func waited(pids []int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		tasks, _ := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
		for _, t := range tasks {
			b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "task", t.Name(), "schedstat"))
			if err != nil {
				continue
			}
			if f := strings.Fields(string(b)); len(f) >= 2 {
				if n, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					sum += time.Duration(n)
				}
			}
		}
	}
	return sum
}

// waits reads what each role waited so far.
func waits(pids map[string][]int) map[string]time.Duration {
	out := map[string]time.Duration{}
	for role, ps := range pids {
		out[role] = waited(ps)
	}
	return out
}
