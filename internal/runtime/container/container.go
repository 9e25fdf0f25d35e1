// Package container runs environments as OCI containers with an OCI runtime
// binary (runc). The runtime spec is generated in Go; each environment gets
// its own user, pid, mount, uts, ipc, cgroup and network namespaces, masked
// and read-only /proc paths, a seccomp profile and a cgroup with its limits.
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

	"github.com/covedev/cove/internal/resources"
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
	case runtime.StatusCreated:
		if _, err := r.runc(ctx, "start", spec.ID); err != nil {
			return fmt.Errorf("start %s: %w", spec.ID, err)
		}
		return nil
	case runtime.StatusStopped:
		r.log.InfoContext(ctx, "deleting stale stopped container", "id", spec.ID)
		if err := r.delete(ctx, spec.ID); err != nil {
			return fmt.Errorf("start %s: %w", spec.ID, err)
		}
	}
	if err := r.create(ctx, spec); err != nil {
		r.cleanupFailed(spec.ID)
		return fmt.Errorf("start %s: %w", spec.ID, err)
	}
	r.log.InfoContext(ctx, "container started", "id", spec.ID, "hostID", spec.IDMap.HostID)
	return nil
}

func validate(s runtime.Spec) error {
	switch {
	case !validID.MatchString(s.ID):
		return fmt.Errorf("container: invalid id %q", s.ID)
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

// create writes the bundle and runs the container (`runc run --detach`).
func (r *Runtime) create(ctx context.Context, spec runtime.Spec) error {
	// A cgroup left behind by a crashed create would hold stale limits.
	cg := resources.CgroupPath(r.cfg.CgroupParent, spec.ID)
	if resources.Exists(cg) {
		if err := r.removeCgroup(ctx, cg); err != nil {
			return err
		}
	}
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
	console, err := os.OpenFile(filepath.Join(spec.StateDir, consoleLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open console log: %w", err)
	}
	defer console.Close()
	return r.runcRun(ctx, spec.ID, bundle, pidFile, console)
}

// cleanupFailed removes what a failed create or start left behind. It runs
// even when the caller's context is done.
func (r *Runtime) cleanupFailed(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), killTimeout)
	defer cancel()
	if err := r.delete(ctx, id); err != nil {
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
	st := state{State: runtime.State{Status: runtime.Status(rs.Status), Pid: rs.Pid}, bundle: rs.Bundle}
	if rs.Bundle != "" {
		st.pidFile = filepath.Join(filepath.Dir(rs.Bundle), pidFileName)
	}
	if st.Status == runtime.StatusStopped {
		st.Pid = 0
		exited(readPid(st.pidFile))
	}
	return st, nil
}
