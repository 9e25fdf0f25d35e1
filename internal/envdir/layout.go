package envdir

import "path/filepath"

// Layout names the host paths of one environment (or of one sibling
// service of it: see Service).
//
// An environment with a disk of its own (WithDisk) keeps what it writes
// (Workspace, Staging, Upper, Work, Volumes, Run) on that disk, mounted at
// Disk; everything the runner writes (state, keys, logs, runtime state)
// stays in Dir, outside it, so a full disk never stops the runner from
// recording what it does.
type Layout struct {
	Dir  string
	data string // where the environment's writable data lives; "" = Dir
}

// New is the layout of environment id under the runner's data directory.
func New(dataDir, id string) Layout { return Layout{Dir: filepath.Join(dataDir, "envs", id)} }

// Root is the directory of every environment under the data directory.
func Root(dataDir string) string { return filepath.Join(dataDir, "envs") }

func (l Layout) path(name string) string { return filepath.Join(l.Dir, name) }

// dataPath is name in the environment's data: on its disk if it has one.
func (l Layout) dataPath(name string) string {
	if l.data != "" {
		return filepath.Join(l.data, name)
	}
	return l.path(name)
}

// Disk is where the environment's disk is mounted; DiskImage is the file
// holding it. Both are in the root-owned environment directory: the
// environment writes inside the mounted file system, never the image.
func (l Layout) Disk() string      { return l.path("disk") }
func (l Layout) DiskImage() string { return l.path("disk.img") }

// WithDisk is l with the environment's data on its disk (Disk).
func (l Layout) WithDisk() Layout { return Layout{Dir: l.Dir, data: l.Disk()} }

// HasDisk reports whether l keeps the data on a disk of its own.
func (l Layout) HasDisk() bool { return l.data != "" }

// State is the environment's state file (state.go).
func (l Layout) State() string { return l.path("state.json") }

// Workspace holds the checkout (/workspaces inside); Staging is the clone's
// scratch space beside it.
func (l Layout) Workspace() string { return l.dataPath("workspace") }
func (l Layout) Staging() string   { return l.dataPath("staging") }

// Upper, Work, Lower and Rootfs make the container's root file system: the
// overlay's upper and work dirs, the views of the image layers below it,
// and the mount point.
func (l Layout) Upper() string  { return l.dataPath("upper") }
func (l Layout) Work() string   { return l.dataPath("work") }
func (l Layout) Lower() string  { return l.path("l") }
func (l Layout) Rootfs() string { return l.path("rootfs") }

// Run is a sibling service's run directory (/.cove/run inside: its exit
// code and agent log), owned by root inside the environment.
func (l Layout) Run() string { return l.dataPath("run") }

// Etc holds what the agent is given read-only (/.cove/etc inside): its
// keys and the post-attach commands.
func (l Layout) Etc() string { return l.path("etc") }

// Runtime is the OCI runtime's state and bundle directory.
func (l Layout) Runtime() string { return l.path("runtime") }

// AgentSocket is where the runner dials the container's agent: in the
// root-owned environment directory, never in a directory the environment
// writes (the agent gets the listening socket as a descriptor).
func (l Layout) AgentSocket() string { return l.path("agent.sock") }

// Hosts, Hostname and ResolvConf are bound read-only over the container's
// /etc files.
func (l Layout) Hosts() string      { return l.path("hosts") }
func (l Layout) Hostname() string   { return l.path("hostname") }
func (l Layout) ResolvConf() string { return l.path("resolv.conf") }

// Features is the scratch directory features are staged in for their
// installation at the first start.
func (l Layout) Features() string { return l.path("features") }

// LogDir is shown read-only at /.cove/log; LogFile is the lifecycle log
// in it.
func (l Layout) LogDir() string  { return l.path("log") }
func (l Layout) LogFile() string { return filepath.Join(l.LogDir(), "lifecycle.log") }

// ServiceLog is the file a service's output goes to (the dev service's
// too, for a Compose environment), under LogDir.
func (l Layout) ServiceLog(name string) string {
	return filepath.Join(l.LogDir(), "services", name+".log")
}

// ConsoleLog is where a single container's output goes.
func (l Layout) ConsoleLog() string { return filepath.Join(l.Runtime(), "console.log") }

// Mnt holds the root-owned staging points of bind mounts (workspaceMount,
// Compose binds) for one start.
func (l Layout) Mnt() string { return l.path("mnt") }

// Volumes holds the environment's named and anonymous volumes.
func (l Layout) Volumes() string { return l.dataPath("volumes") }

// Services holds every sibling service's directory.
func (l Layout) Services() string { return l.path("svc") }

// ServicesData holds the sibling services' data (their Upper, Work and
// Run): Services, or its twin on the environment's disk.
func (l Layout) ServicesData() string { return l.dataPath("svc") }

// Service is the layout of one sibling service: the same names as the
// environment's (Upper, Work, Rootfs, Run, Runtime, ...) under svc/<name>,
// its data on the environment's disk if it has one.
func (l Layout) Service(name string) Layout {
	s := Layout{Dir: filepath.Join(l.Services(), name)}
	if l.data != "" {
		s.data = filepath.Join(l.ServicesData(), name)
	}
	return s
}
