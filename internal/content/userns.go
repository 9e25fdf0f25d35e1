package content

import (
	"fmt"
	"github.com/covedev/cove/internal/resources"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/tailbuf"
)

// basePath is the PATH of every command this package runs.
const basePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// userNSAttr returns process attributes that run a command as root inside a
// new user namespace mapping ids [0, m.Size) to host [m.HostID, ...): on the
// host the process is the unprivileged uid m.HostID, with no supplementary
// groups (host root's groups are dropped, so group-readable host files stay
// out of reach), and its capabilities only cover inodes owned by ids of the
// range. Only the user namespace is new: paths and network are the host's.
func userNSAttr(m idmap.Range) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(m.HostID), Size: int(m.Size)}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(m.HostID), Size: int(m.Size)}},
		// The maps are written by us (host root); allowing setgroups lets
		// the child drop host root's supplementary groups below.
		GidMappingsEnableSetgroups: true,
		Credential:                 &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}},
		Pdeathsig:                  syscall.SIGKILL,
		Setpgid:                    true,
	}
}

func checkRange(m idmap.Range, uid, gid uint32) error {
	if m.Size == 0 || m.HostID == 0 || uint64(m.HostID)+uint64(m.Size) > 1<<32-1 {
		return fmt.Errorf("invalid id range %s", m)
	}
	if uid >= m.Size || gid >= m.Size {
		return fmt.Errorf("owner %d:%d is outside the environment's id range of size %d", uid, gid, m.Size)
	}
	return nil
}

// cmdError is a failed command with the tail of its output.
type cmdError struct {
	args   []string
	err    error
	stderr string
}

func (e *cmdError) Error() string {
	return fmt.Sprintf("%s: %v: %s", strings.Join(e.args, " "), e.err, strings.TrimSpace(e.stderr))
}

func (e *cmdError) Unwrap() error { return e.err }

// run runs cmd, returning a *cmdError with its output tail on failure.
func run(cmd *exec.Cmd) error {
	return runWith(cmd, resources.StartChild) // not in the runner's weighted cgroup
}

// runWith is run with start as the way to start cmd.
func runWith(cmd *exec.Cmd, start func(*exec.Cmd) error) error {
	out := &tailbuf.Buffer{Max: 16 << 10}
	cmd.Stdout = out
	cmd.Stderr = out
	err := start(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return &cmdError{args: cmd.Args, err: err, stderr: out.String()}
	}
	return nil
}

// gitEnv is the whole environment git runs with: nothing from the runner's
// environment, no system or global configuration, no prompts.
func gitEnv(home, allowProtocols string) []string {
	return []string{
		"PATH=" + basePath,
		"HOME=" + home,
		"LANG=C",
		"LC_ALL=C",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_ASKPASS=/bin/false",
		"SSH_ASKPASS=/bin/false",
		"GIT_ALLOW_PROTOCOL=" + allowProtocols,
		// BatchMode: never ask for a password or passphrase; host keys of
		// new hosts are accepted into the staging HOME (no key pinning yet).
		"GIT_SSH_COMMAND=ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
	}
}

// gitConfigArgs are "-c" options given to every git invocation.
var gitConfigArgs = []string{
	"-c", "credential.helper=",
	"-c", "core.fsmonitor=false",
	"-c", "core.hooksPath=/dev/null",
	"-c", "submodule.recurse=false",
	"-c", "advice.detachedHead=false",
}

// searchable checks that uid, with primary group uid too (the root of an
// environment's range, as commands in its user namespace run), can traverse
// every ancestor of dir, so that those commands can reach it.
func searchable(dir string, uid uint32) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		perm := fi.Mode().Perm()
		canSearch := perm&0o001 != 0 || ok && (st.Uid == uid && perm&0o100 != 0 || st.Gid == uid && perm&0o010 != 0)
		if ok && !canSearch {
			return fmt.Errorf("%s (mode %o) is not searchable by the environment's uid %d: make it o+x", d, fi.Mode().Perm(), uid)
		}
		if d == "/" {
			return nil
		}
	}
}

// lastLines returns the last n non-empty lines of s.
func lastLines(s string, n int) []string {
	var out []string
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0 && len(out) < n; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			out = append([]string{l}, out...)
		}
	}
	return out
}
