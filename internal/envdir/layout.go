package envdir

import "path/filepath"

// Layout names the host paths of one environment (or of one sibling
// service of it: see Service).
type Layout struct{ Dir string }

// New is the layout of environment id under the runner's data directory.
func New(dataDir, id string) Layout { return Layout{filepath.Join(dataDir, "envs", id)} }

// Root is the directory of every environment under the data directory.
func Root(dataDir string) string { return filepath.Join(dataDir, "envs") }

func (l Layout) path(name string) string { return filepath.Join(l.Dir, name) }

// State is the environment's state file (state.go).
func (l Layout) State() string { return l.path("state.json") }

// Workspace holds the checkout (/workspaces inside); Staging is the clone's
// scratch space beside it.
func (l Layout) Workspace() string { return l.path("workspace") }
func (l Layout) Staging() string   { return l.path("staging") }

// Upper, Work, Lower and Rootfs make the container's root file system: the
// overlay's upper and work dirs, the views of the image layers below it,
// and the mount point.
func (l Layout) Upper() string  { return l.path("upper") }
func (l Layout) Work() string   { return l.path("work") }
func (l Layout) Lower() string  { return l.path("l") }
func (l Layout) Rootfs() string { return l.path("rootfs") }

// Run is a sibling service's run directory (/.cove/run inside: its exit
// code and agent log), owned by root inside the environment.
func (l Layout) Run() string { return l.path("run") }

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
func (l Layout) Volumes() string { return l.path("volumes") }

// Services holds every sibling service's directory.
func (l Layout) Services() string { return l.path("svc") }

// Service is the layout of one sibling service: the same names as the
// environment's (Upper, Work, Rootfs, Run, Runtime, ...) under svc/<name>.
func (l Layout) Service(name string) Layout { return Layout{filepath.Join(l.Services(), name)} }
