// Package runtime defines the interface the runner uses to turn an
// environment into an isolated, running machine. Implementations live in
// subpackages (container for OCI runtimes such as runc; vm later) and all of
// them pass the conformance suite in runtimetest.
//
// The interface is deliberately runtime-neutral: it speaks in environment
// ids, a prepared root filesystem, an id range for the user namespace, mounts
// and resource limits — never in OCI or hypervisor terms. An environment
// made of several machines (a Docker Compose devcontainer: the dev container
// and its services) starts one Spec per machine, all with the same Group, so
// that they share the environment's limits.
package runtime

import (
	"context"
	"os"
	"time"

	"github.com/covedev/cove/internal/idmap"
)

// Mount is an extra mount inside the environment. Bind mounts use Type
// "bind" and Options including "rbind" (or "bind") and, for read-only
// mounts, "ro".
type Mount struct {
	Source      string
	Destination string
	Type        string
	Options     []string
}

// Resources are the environment's limits. A zero value means unlimited.
type Resources struct {
	CPUMillis   int64 // 1000 = one CPU
	MemoryBytes int64
	Pids        int64
	// MemoryHighBytes is the reclaim target: memory above it is reclaimed
	// first (v1 soft limit, v2 memory.high).
	MemoryHighBytes int64
	// SwapBytes is the swap allowed beyond MemoryBytes; NoSwap: none.
	SwapBytes int64
	// IO limits block IO per device.
	IO []DeviceIO
}

// NoSwap as Resources.SwapBytes: no swap at all.
const NoSwap = -1

// DeviceIO limits IO on one block device (a whole disk); zero: unlimited.
type DeviceIO struct {
	Major, Minor                           int64
	ReadBPS, WriteBPS, ReadIOPS, WriteIOPS uint64
}

// Process describes the environment's first process (PID 1, the cove agent).
// UID and GID are ids inside the environment.
type Process struct {
	Args []string
	Env  []string
	Cwd  string
	UID  uint32
	GID  uint32
}

// Spec is everything a runtime needs to start one environment.
type Spec struct {
	// ID is the environment id; runtimes use it as their own id too.
	ID       string
	Hostname string
	// StateDir is a directory on local disk owned by the runtime for this
	// environment (bundle, pid file, logs). The caller creates and finally
	// removes it.
	StateDir string
	// Rootfs is the already-mounted root filesystem (the caller prepares the
	// overlay).
	Rootfs string
	// IDMap maps ids [0, Size) inside the environment's user namespace to
	// host ids [HostID, HostID+Size).
	IDMap     idmap.Range
	Process   Process
	Mounts    []Mount
	Resources Resources
	// NetNSPath, if set, is a network namespace (a bind-mounted nsfs file)
	// the caller prepared for the environment; otherwise the environment
	// gets a new one with only loopback.
	NetNSPath string
	// Devices are extra host device nodes the environment's class grants,
	// such as /dev/fuse or /dev/net/tun.
	Devices []string
	// Group, if set, names a group of containers that share one cgroup
	// (the containers of one environment: its dev container and its
	// services). The group's cgroup carries Resources as the limits of
	// the group as a whole; each member's own cgroup sits below it,
	// without limits of its own. Members of one group must give the same
	// Resources. The group's cgroup is removed with its last member.
	Group string
	// ConsoleLog, if set, is the file the container's output (stdout and
	// stderr of PID 1) is appended to, instead of console.log in StateDir.
	ConsoleLog string
	// ExtraFiles are open files PID 1 inherits as descriptors 3, 4, ...
	// The runner hands the agent its listening socket this way, so that the
	// socket lives where the environment cannot reach it. They are passed
	// when the environment is created; the caller keeps them and closes
	// them after Start.
	ExtraFiles []*os.File
}

// Status is the observed state of an environment's machine.
type Status string

// Statuses a runtime reports.
const (
	StatusCreated Status = "created"
	StatusRunning Status = "running"
	StatusPaused  Status = "paused"
	StatusStopped Status = "stopped"
	StatusAbsent  Status = "absent"
)

// State is what a runtime observes about one environment.
type State struct {
	Status Status
	// Pid is the host pid of the environment's PID 1 while it runs, else 0.
	Pid int
}

// Runtime runs environments. All methods are idempotent so that a runner
// restarted at any point can call them again; environments keep running
// while the runner is away and are found again through List and State.
type Runtime interface {
	// Name identifies the runtime ("container", "vm").
	Name() string
	// Start creates and starts the environment. It returns nil if it is
	// already running; a stale stopped (or created but never started) one
	// is deleted and started again.
	Start(ctx context.Context, spec Spec) error
	// State reports the environment's state; StatusAbsent if unknown.
	State(ctx context.Context, id string) (State, error)
	// Stop sends SIGTERM to PID 1, SIGKILL after grace, and waits until the
	// environment has stopped. Stopping a stopped or absent environment
	// succeeds.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// Delete stops the environment if needed and removes every trace the
	// runtime keeps of it (runtime state, cgroup). Deleting an absent
	// environment succeeds.
	Delete(ctx context.Context, id string) error
	// List returns the ids of the environments the runtime knows, for
	// recovery after a runner restart.
	List(ctx context.Context) ([]string, error)
}
