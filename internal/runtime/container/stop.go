package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/runtime"
)

// Stop implements runtime.Runtime. With grace 0 the container is killed at
// once.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	defer r.lock(id)()
	if err := r.stop(ctx, id, grace); err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	return nil
}

func (r *Runtime) stop(ctx context.Context, id string, grace time.Duration) error {
	st, err := r.state(ctx, id)
	if err != nil {
		return err
	}
	switch st.Status {
	case runtime.StatusAbsent, runtime.StatusStopped:
		return nil
	case runtime.StatusPaused:
		// Signals are not delivered to frozen processes.
		if _, err := r.runc(ctx, "resume", id); err != nil {
			return err
		}
	}
	pid := st.Pid
	if pid == 0 {
		pid = readPid(st.pidFile)
	}
	if grace > 0 {
		if err := r.kill(ctx, id, "TERM"); err != nil {
			return err
		}
		if waitExited(ctx, pid, grace) {
			return nil
		}
		r.log.InfoContext(ctx, "container ignored SIGTERM, killing", "id", id, "grace", grace)
	}
	if err := r.kill(ctx, id, "KILL"); err != nil {
		return err
	}
	if !waitExited(ctx, pid, killTimeout) {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("container init %d did not exit after SIGKILL", pid)
	}
	return nil
}

// kill signals the container's init. A container that stopped meanwhile is
// not an error.
func (r *Runtime) kill(ctx context.Context, id, sig string) error {
	_, err := r.runc(ctx, "kill", id, sig)
	if err == nil || errors.Is(err, errNotExist) || strings.Contains(err.Error(), "not running") {
		return nil
	}
	return err
}

// waitExited polls until pid has exited (reaping it if it is our child), d
// has passed, or ctx is done. It reports whether pid exited.
func waitExited(ctx context.Context, pid int, d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if exited(pid) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return exited(pid)
		case <-tick.C:
		}
	}
}

// Delete implements runtime.Runtime.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	defer r.lock(id)()
	if err := r.delete(ctx, id, ""); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	return nil
}

// delete removes container id. group is the container's group if known to
// the caller ("" otherwise); runc's state, while it has one, tells it too.
func (r *Runtime) delete(ctx context.Context, id, group string) error {
	st, err := r.state(ctx, id)
	if err != nil {
		return err
	}
	if st.group != "" {
		group = st.group
	}
	if st.Status != runtime.StatusAbsent && st.Status != runtime.StatusStopped {
		if err := r.stop(ctx, id, 0); err != nil {
			return err
		}
	}
	if st.Status != runtime.StatusAbsent {
		if _, err := r.runc(ctx, "delete", "--force", id); err != nil && !errors.Is(err, errNotExist) {
			return err
		}
		exited(readPid(st.pidFile))
	}
	if err := r.removeCgroups(ctx, id, group); err != nil {
		return err
	}
	if st.bundle != "" {
		if err := os.RemoveAll(st.bundle); err != nil {
			return fmt.Errorf("remove bundle: %w", err)
		}
		if err := os.Remove(st.pidFile); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove pid file: %w", err)
		}
		if err := os.RemoveAll(filepath.Join(filepath.Dir(st.bundle), devicesDir)); err != nil {
			return fmt.Errorf("remove device nodes: %w", err)
		}
	}
	return nil
}

func (r *Runtime) removeCgroup(ctx context.Context, cg string) error {
	ctx, cancel := context.WithTimeout(ctx, cgroupTimeout)
	defer cancel()
	return resources.Remove(ctx, cg)
}

// List implements runtime.Runtime.
func (r *Runtime) List(ctx context.Context) ([]string, error) {
	ids, err := r.runcList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	return ids, nil
}

func readPid(pidFile string) int {
	if pidFile == "" {
		return 0
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func lookPath(p string) (string, error) {
	if filepath.IsAbs(p) {
		return p, nil
	}
	return exec.LookPath(p)
}
