// Package container runs environments as OCI containers with an OCI runtime
// binary (runc). The runtime spec is generated in Go; each environment gets
// its own user, pid, mount, uts, ipc, cgroup and network namespaces, masked
// and read-only /proc paths, a seccomp profile and a cgroup with its limits.
//
// Cgroups live below Config.CgroupParent: a container without a group has
// its cgroup, with its limits, at <parent>/<id>. The containers of a group
// (runtime.Spec.Group: the dev container and services of one environment)
// share the cgroup <parent>/<group>, which this package creates with the
// group's limits before runc runs a member, and removes with the last
// member; each member's cgroup is <parent>/<group>/<id>, with only its
// device rules. Group names and ungrouped container ids therefore share one
// namespace below the parent.
//
// A container's output goes to runtime.Spec.ConsoleLog, or console.log in
// its state directory.
//
// Containers are not tied to the runner process: they keep running while the
// runner restarts and are found again with List and State.
package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"

	"github.com/covedev/cove/internal/runtime"
)

// Config configures a Runtime.
type Config struct {
	// RuncPath is the OCI runtime binary; "runc" (looked up in PATH) if empty.
	RuncPath string
	// Root is runc's state directory (runc --root), e.g. /run/cove/runc.
	Root string
	// CgroupParent is the cgroup under which every environment's cgroup is
	// created; "cove" if empty.
	CgroupParent string
	Log          *slog.Logger
}

// Runtime is the container runtime. It is safe for concurrent use.
type Runtime struct {
	cfg Config
	log *slog.Logger

	nofile uint64 // RLIMIT_NOFILE given to containers

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

var _ runtime.Runtime = (*Runtime)(nil)

const (
	bundleDir   = "bundle"
	devicesDir  = "devices"
	pidFileName = "init.pid"
	consoleLog  = "console.log"

	pollInterval  = 20 * time.Millisecond
	killTimeout   = 30 * time.Second
	cgroupTimeout = 10 * time.Second
)

// validID matches the ids runc accepts.
var validID = regexp.MustCompile(`^[\w+\-.]+$`)

// New returns a runtime using cfg.
func New(cfg Config) (*Runtime, error) {
	if cfg.RuncPath == "" {
		cfg.RuncPath = "runc"
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "cove"
	}
	if cfg.Root == "" {
		return nil, errors.New("container runtime: no runc root directory configured")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	p, err := lookPath(cfg.RuncPath)
	if err != nil {
		return nil, fmt.Errorf("container runtime: %w", err)
	}
	cfg.RuncPath = p
	if err := os.MkdirAll(cfg.Root, 0o700); err != nil {
		return nil, fmt.Errorf("container runtime: %w", err)
	}
	return &Runtime{cfg: cfg, log: cfg.Log, nofile: raiseNofile(cfg.Log), locks: map[string]*sync.Mutex{}}, nil
}

// raiseNofile raises this process's RLIMIT_NOFILE to nofileLimit if it is
// lower, and returns the limit containers can be given. runc sets a
// container's limits from inside its user namespace, where they can only be
// lowered, so the limit must be inherited from the runner.
func raiseNofile(log *slog.Logger) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nofileLimit
	}
	if lim.Max >= nofileLimit {
		return nofileLimit
	}
	// syscall.Setrlimit (not x/sys/unix) so that os/exec children inherit
	// the new limit instead of the soft limit Go found at start.
	want := syscall.Rlimit{Cur: nofileLimit, Max: nofileLimit}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		log.Warn("cannot raise open files limit; containers get the runner's", "limit", lim.Max, "err", err)
		return lim.Max
	}
	return nofileLimit
}

// Name implements runtime.Runtime.
func (r *Runtime) Name() string { return "container" }

// lock serialises operations on one container.
func (r *Runtime) lock(id string) func() {
	r.mu.Lock()
	l, ok := r.locks[id]
	if !ok {
		l = &sync.Mutex{}
		r.locks[id] = l
	}
	r.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Start implements runtime.Runtime.
func (r *Runtime) Start(ctx context.Context, spec runtime.Spec) error {
	if err := validate(spec); err != nil {
		return err
	}
	defer r.lock(spec.ID)()

	st, err := r.state(ctx, spec.ID)
	if err != nil {
		return fmt.Errorf("start %s: %w", spec.ID, err)
	}
	switch st.Status {
	case runtime.StatusRunning, runtime.StatusPaused:
		return nil
	case runtime.StatusStopped, runtime.StatusCreated:
		// A container created but never started holds the descriptors of
		// an earlier Start (spec.ExtraFiles): make it afresh.
		r.log.InfoContext(ctx, "deleting stale container", "id", spec.ID, "status", st.Status)
		if err := r.delete(ctx, spec.ID, spec.Group); err != nil {
			return fmt.Errorf("start %s: %w", spec.ID, err)
		}
	}
	if err := r.create(ctx, spec); err != nil {
		r.cleanupFailed(spec.ID, spec.Group)
		return fmt.Errorf("start %s: %w", spec.ID, err)
	}
	r.log.InfoContext(ctx, "container started", "id", spec.ID, "group", spec.Group, "hostID", spec.IDMap.HostID)
	return nil
}

func validate(s runtime.Spec) error {
	switch {
	case !validName(s.ID):
		return fmt.Errorf("container: invalid id %q", s.ID)
	case s.Group != "" && !validName(s.Group):
		return fmt.Errorf("container %s: invalid group %q", s.ID, s.Group)
	case s.ConsoleLog != "" && !filepath.IsAbs(s.ConsoleLog):
		return fmt.Errorf("container %s: console log %q is not absolute", s.ID, s.ConsoleLog)
	case !filepath.IsAbs(s.StateDir):
		return fmt.Errorf("container %s: state dir %q is not absolute", s.ID, s.StateDir)
	case !filepath.IsAbs(s.Rootfs):
		return fmt.Errorf("container %s: rootfs %q is not absolute", s.ID, s.Rootfs)
	case s.IDMap.Size == 0:
		return fmt.Errorf("container %s: empty id map", s.ID)
	case len(s.Process.Args) == 0:
		return fmt.Errorf("container %s: no process args", s.ID)
	}
	return nil
}

// validName reports whether s is a valid container id or group name: one
// that runc accepts and that names a single path element.
func validName(s string) bool {
	return validID.MatchString(s) && s != "." && s != ".."
}

// create writes the bundle and runs the container (`runc run --detach`).
func (r *Runtime) create(ctx context.Context, spec runtime.Spec) error {
	oci, err := r.ociSpec(spec)
	if err != nil {
		return err
	}
	bundle := filepath.Join(spec.StateDir, bundleDir)
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return fmt.Errorf("create bundle: %w", err)
	}
	b, err := json.MarshalIndent(oci, "", "\t")
	if err != nil {
		return fmt.Errorf("encode runtime spec: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return fmt.Errorf("write runtime spec: %w", err)
	}
	pidFile := filepath.Join(spec.StateDir, pidFileName)
	_ = os.Remove(pidFile)
	console, err := openConsoleLog(spec)
	if err != nil {
		return err
	}
	defer console.Close()
	// The group's cgroup must exist, with its limits, until runc has made
	// the member's cgroup below it.
	if spec.Group != "" {
		defer r.lockGroup(spec.Group)()
	}
	if err := r.prepareCgroup(ctx, spec); err != nil {
		return err
	}
	return r.runcRun(ctx, spec.ID, bundle, pidFile, console, spec.ExtraFiles)
}

// openConsoleLog opens the file the container's output is appended to.
func openConsoleLog(spec runtime.Spec) (*os.File, error) {
	p := spec.ConsoleLog
	if p == "" {
		p = filepath.Join(spec.StateDir, consoleLog)
	} else if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, fmt.Errorf("open console log: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open console log: %w", err)
	}
	return f, nil
}

// cleanupFailed removes what a failed create or start of a member of group
// ("" for none) left behind. It runs even when the caller's context is done.
func (r *Runtime) cleanupFailed(id, group string) {
	ctx, cancel := context.WithTimeout(context.Background(), killTimeout)
	defer cancel()
	if err := r.delete(ctx, id, group); err != nil {
		r.log.Warn("cleanup after failed start", "id", id, "err", err)
	}
}

// State implements runtime.Runtime.
func (r *Runtime) State(ctx context.Context, id string) (runtime.State, error) {
	st, err := r.state(ctx, id)
	if err != nil {
		return runtime.State{}, fmt.Errorf("state %s: %w", id, err)
	}
	return st.State, nil
}

type state struct {
	runtime.State
	pidFile string // "" if unknown
	bundle  string
	group   string // "" if none or unknown
}

// state asks runc about id. A stopped container's init is reaped if it is
// this process's child.
func (r *Runtime) state(ctx context.Context, id string) (state, error) {
	rs, err := r.runcState(ctx, id)
	if errors.Is(err, errNotExist) {
		return state{State: runtime.State{Status: runtime.StatusAbsent}}, nil
	}
	if err != nil {
		return state{}, err
	}
	st := state{
		State:  runtime.State{Status: runtime.Status(rs.Status), Pid: rs.Pid},
		bundle: rs.Bundle,
		group:  rs.Annotations[groupAnnotation],
	}
	if rs.Bundle != "" {
		st.pidFile = filepath.Join(filepath.Dir(rs.Bundle), pidFileName)
	}
	if st.Status == runtime.StatusStopped {
		st.Pid = 0
		exited(readPid(st.pidFile))
	}
	return st, nil
}
