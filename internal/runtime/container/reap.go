package container

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// BecomeSubreaper makes the calling process the reaper of its orphaned
// descendants. The runner calls it once at start: a container's init is
// orphaned when `runc create` exits and must be reaped by the runner, not
// by the host's PID 1 (which may not reap at all).
func BecomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// procState returns the state letter of pid from /proc ('R', 'S', 'Z', ...)
// and its parent pid; ok is false if the process does not exist.
func procState(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name is in parentheses and may contain anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 2 || len(fields[0]) != 1 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(fields[1])
	return fields[0][0], ppid, true
}

// exited reports whether pid has exited (is gone or a zombie), reaping it
// first if it is an exited child of this process. Only pid itself is ever
// waited for: other components of the runner own their own children.
func exited(pid int) bool {
	if pid <= 0 {
		return true
	}
	state, ppid, ok := procState(pid)
	if !ok {
		return true
	}
	if state != 'Z' && state != 'X' {
		return false
	}
	if ppid == os.Getpid() {
		reap(pid)
	}
	return true
}

// reap collects the exit status of child pid if it has exited.
func reap(pid int) {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if !errors.Is(err, unix.EINTR) {
			return // reaped, still running (0), or not our child (ECHILD)
		}
	}
}
