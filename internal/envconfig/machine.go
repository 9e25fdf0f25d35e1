package envconfig

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/covedev/cove/internal/compose"
	"github.com/covedev/cove/internal/guest"
	"github.com/covedev/cove/internal/lifecycle"
	"github.com/covedev/cove/internal/usererr"
)

// Machine is one container of an environment, ready to start: the dev
// container or a sibling Docker Compose service.
type Machine struct {
	// ID is its runtime id: the environment's id for the dev container,
	// <environment id>-<service> for a sibling.
	ID string
	// Dev is set for the dev container (the one SSH lands in).
	Dev bool
	// Service is the Compose service it runs: a sibling's name, or the
	// dev service's for the dev container of a Compose configuration;
	// "" for a single dev container. A machine with a Service writes its
	// output to that service's log (guest.ServiceLogDir/<Service>.log)
	// instead of the runtime's console log.
	Service string
	// Group is the cgroup it shares with the environment's other machines
	// ("" for a single dev container).
	Group string
	// Hostname is its host name (/etc/hostname is Hostname and a newline).
	Hostname string
	// HostsLines are lines for the environment's hosts file, which every
	// machine shares, after what the network set up: runArgs --hostname
	// and --add-host, and the Compose services' names (dev container only).
	HostsLines []string
	// Process is what the container runs: the agent.
	Process Process
	// Agent is what Process.Args say (Process.Args is Agent.Args()).
	Agent Agent
	// Mounts are the container's mounts, in order, beside its root
	// filesystem.
	Mounts []Mount
	// Resources are the class's limits.
	Resources Resources
	// PostAttach is the content of guest.PostAttach (dev container only):
	// the postAttachCommand list, JSON.
	PostAttach []byte
	// RemoteEnv is the content of guest.RemoteEnv (dev container only):
	// remoteEnv as a JSON list of KEY=VALUE, which the agent gives users'
	// sessions. It is not in Process.Env: remoteEnv is not the
	// container's environment.
	RemoteEnv []byte
	// DependsOn is what must be satisfied before it starts (Compose).
	DependsOn map[string]compose.Condition
	// Healthcheck is a sibling's health check (nil for none).
	Healthcheck *compose.Healthcheck
	// Ports, Hooks, Warnings, Extensions and Customizations are the
	// devcontainer's (dev container only).
	Ports          *Ports
	Hooks          lifecycle.Hooks
	Warnings       []string
	Extensions     []string
	Customizations string
}

// Process is a container's process.
type Process struct {
	Args []string
	Env  []string
	Cwd  string
}

// Resources are a container's limits (zero: none).
type Resources struct {
	CPUMillis   int64
	MemoryBytes int64
	Pids        int64
}

// HostsText is m's HostsLines as text to append to the hosts file ("" for
// none).
func (m *Machine) HostsText() string {
	if len(m.HostsLines) == 0 {
		return ""
	}
	return strings.Join(m.HostsLines, "\n") + "\n"
}

// MountKind says what a mount is; the runner maps each kind to the host
// file or directory it owns for the machine.
type MountKind string

// Mount kinds.
const (
	// MountAgentBinary is the cove binary.
	MountAgentBinary MountKind = "agent-binary"
	// MountEtc is the machine's etc directory (agent keys, the
	// postAttachCommand list).
	MountEtc MountKind = "etc"
	// MountRun is a sibling's writable run directory (exit code, agent
	// log).
	MountRun MountKind = "run"
	// MountWorkspace is the environment's workspace (its checkout's
	// parent).
	MountWorkspace MountKind = "workspace"
	// MountCheckout is the repository's checkout, staged, at
	// workspaceMount's target.
	MountCheckout MountKind = "checkout"
	// MountHosts, MountHostname and MountResolvConf are the environment's
	// hosts file, the machine's hostname file and the environment's
	// resolv.conf.
	MountHosts      MountKind = "hosts"
	MountHostname   MountKind = "hostname"
	MountResolvConf MountKind = "resolv.conf"
	// MountLog is the environment's log directory.
	MountLog MountKind = "log"
	// MountFeatures is the environment's staged features, while their
	// installation is pending.
	MountFeatures MountKind = "features"
	// MountVolume is an environment-local volume: Source is its name
	// (VolumeName); a new one starts with a copy of what the machine's
	// image has at Target.
	MountVolume MountKind = "volume"
	// MountBind is a directory of the checkout: Source is its path as the
	// configuration resolved it (inside the workspace).
	MountBind MountKind = "bind"
	// MountTmpfs is a tmpfs.
	MountTmpfs MountKind = "tmpfs"
)

// Mount is one mount of a machine, described: the runner supplies the
// host source of every kind but MountTmpfs (whose Source is "tmpfs").
type Mount struct {
	Kind MountKind
	// Source is the volume name (MountVolume), the configured path
	// (MountBind) or "tmpfs"; "" for the kinds the runner maps.
	Source  string
	Target  string
	Type    string // "bind" or "tmpfs"
	Options []string
}

func bindMount(kind MountKind, target string, opts ...string) Mount {
	return Mount{Kind: kind, Target: target, Type: "bind", Options: opts}
}

// Options are what shapes the machines besides the resolved
// configuration: the runner's and the environment's progress.
type Options struct {
	// Class sizes the machines (nil: no limits).
	Class *Class
	// Networked says whether the dev container joins a network namespace
	// the runner set up (its network attachment has a namespace path),
	// and so gets the environment's resolv.conf. A sibling service always
	// does: Compose needs environment networking.
	Networked bool
	// FeaturesInstalled says the pending features (DC.FeaturesPending)
	// are installed in the dev container's file system: their staging
	// directory is no longer mounted.
	FeaturesInstalled bool
}

// Machines are the containers to start for the environment id with the
// resolved configuration r, in start order: the Compose services the dev
// service comes after, the dev container, then the others (each machine
// starts once its DependsOn are satisfied).
func Machines(id Identity, r *Resolved, o Options) ([]Machine, error) {
	var res Resources
	if c := o.Class; c != nil {
		res = Resources{CPUMillis: int64(c.CPUs) * 1000, MemoryBytes: c.MemoryBytes, Pids: c.Pids}
	}
	dev, err := devMachine(id, r, res, o)
	if err != nil {
		return nil, err
	}
	cs := r.Compose
	if cs == nil {
		return []Machine{dev}, nil
	}
	var out []Machine
	if !slices.Contains(cs.Order, cs.DevService) {
		out = append(out, dev) // a state without the dev service's place: first
	}
	for _, name := range cs.Order {
		if name == cs.DevService {
			out = append(out, dev)
			continue
		}
		s, ok := cs.Service(name)
		if !ok {
			return nil, fmt.Errorf("compose state: service %q is in the start order but not among the services", name)
		}
		m, err := serviceMachine(id, s, res)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// devMachine is the environment's dev container.
func devMachine(id Identity, r *Resolved, res Resources, o Options) (Machine, error) {
	dc := r.DC
	m := Machine{ID: id.ID, Dev: true, Hostname: id.Name, Resources: res}
	if dc != nil && dc.Hostname != "" { // runArgs --hostname
		m.Hostname = dc.Hostname
	}
	if dc != nil && (len(dc.AddHosts) > 0 || dc.Hostname != "") { // runArgs --add-host host:ip, --hostname
		if dc.Hostname != "" {
			m.HostsLines = append(m.HostsLines, "127.0.1.1\t"+dc.Hostname)
		}
		for _, h := range dc.AddHosts {
			if host, ip, ok := strings.Cut(h, ":"); ok {
				m.HostsLines = append(m.HostsLines, ip+"\t"+host)
			}
		}
	}
	if cs := r.Compose; cs != nil {
		// Services reach each other by name: they share the network
		// namespace, so every name is this host.
		m.HostsLines = append(m.HostsLines, "127.0.0.1\t"+strings.Join(cs.Order, " "))
		m.Service, m.Group, m.DependsOn = cs.DevService, id.ID, cs.DevDependsOn
	}
	postAttach := []lifecycle.Command{}
	if dc != nil && dc.Hooks.PostAttach != nil {
		postAttach = dc.Hooks.PostAttach
	}
	pa, err := json.Marshal(postAttach)
	if err != nil {
		return Machine{}, fmt.Errorf("postAttachCommand: %w", err)
	}
	m.PostAttach = pa
	remoteEnv := []string{}
	if dc != nil && dc.RemoteEnv != nil {
		remoteEnv = dc.RemoteEnv
	}
	if m.RemoteEnv, err = json.Marshal(remoteEnv); err != nil {
		return Machine{}, fmt.Errorf("remoteEnv: %w", err)
	}
	m.Agent = Agent{User: cmp.Or(r.User, "root"), WorkDir: guest.WorkspaceFolder(id.RepoName), PostAttach: guest.PostAttach,
		RemoteEnv: guest.RemoteEnv, KeepProfilePath: true}
	procEnv := r.Env
	if dc != nil {
		if dc.WorkspaceFolder != "" {
			m.Agent.WorkDir = dc.WorkspaceFolder
		}
		// containerEnv is the container's environment (every process
		// has it); remoteEnv is not: the agent gives it to users'
		// sessions (guest.RemoteEnv) and the runner to lifecycle
		// commands.
		if len(dc.ContainerEnv) > 0 {
			procEnv = dc.ContainerEnv
		}
		m.Agent.Entrypoints, m.Agent.Command = dc.Entrypoints, dc.Command
		m.Agent.EntrypointWorkDir, m.Agent.UserEnvProbe = dc.WorkingDir, dc.UserEnvProbe
		m.Ports, m.Hooks = &dc.Ports, dc.Hooks
		m.Warnings, m.Extensions, m.Customizations = dc.Warnings, dc.Extensions, dc.Customizations
	}
	m.Process = Process{
		Args: m.Agent.Args(),
		Env:  append(WithDefaultPath(procEnv), guest.EnvEnvironmentID+"="+id.ID, guest.EnvEnvironmentName+"="+id.Name),
		Cwd:  "/",
	}
	m.Mounts = []Mount{
		bindMount(MountAgentBinary, guest.AgentBinary, "bind", "ro"),
		bindMount(MountEtc, guest.EtcDir, "bind", "ro"),
		bindMount(MountWorkspace, guest.Workspaces, "rbind"),
		bindMount(MountHosts, guest.Hosts, "bind", "ro"),
		bindMount(MountHostname, guest.Hostname, "bind", "ro"),
	}
	if o.Networked {
		m.Mounts = append(m.Mounts, bindMount(MountResolvConf, guest.ResolvConf, "bind", "ro"))
	}
	m.Mounts = append(m.Mounts, bindMount(MountLog, guest.LogDir, "bind", "ro"))
	if dc != nil {
		if dc.MountTarget != "" {
			// The checkout itself: the runner stages it, so the runtime
			// never mounts a path the environment controls.
			m.Mounts = append(m.Mounts, bindMount(MountCheckout, dc.MountTarget, "rbind"))
		}
		vols, err := configMounts(dc.Mounts)
		if err != nil {
			return Machine{}, err
		}
		m.Mounts = append(m.Mounts, vols...)
		if dc.FeaturesPending && !o.FeaturesInstalled {
			// Writable: install scripts chmod themselves. Per-environment
			// scratch.
			m.Mounts = append(m.Mounts, bindMount(MountFeatures, guest.FeaturesDir, "bind"))
		}
	}
	return m, nil
}

// serviceMachine is sibling service s: the agent runs its command as its
// user and exits with it, writing the exit code and its own log to the
// service's run directory.
func serviceMachine(id Identity, s *ServiceState, res Resources) (Machine, error) {
	if !ValidServiceName(s.Name) { // a state written before names were checked
		return Machine{}, usererr.New("docker compose: invalid service name %q: rebuild the environment", s.Name)
	}
	user := cmp.Or(s.User, "root")
	workdir := cmp.Or(s.WorkingDir, "/")
	m := Machine{ID: id.ID + "-" + s.Name, Service: s.Name, Group: id.ID, Hostname: s.Hostname, Resources: res,
		DependsOn: s.DependsOn, Healthcheck: s.Healthcheck}
	m.Agent = Agent{User: user, WorkDir: workdir, CommandUser: user, EntrypointWorkDir: workdir,
		ExitWithCommand: true, ExitCodeFile: guest.ExitCodeFile, LogFile: guest.AgentLog, Command: s.Command}
	m.Process = Process{
		Args: m.Agent.Args(),
		Env: append(WithDefaultPath(s.Env), guest.EnvEnvironmentID+"="+id.ID, guest.EnvEnvironmentName+"="+id.Name,
			guest.EnvService+"="+s.Name),
		Cwd: "/",
	}
	m.Mounts = []Mount{
		bindMount(MountAgentBinary, guest.AgentBinary, "bind", "ro"),
		bindMount(MountRun, guest.RunDir, "bind"),
		bindMount(MountEtc, guest.EtcDir, "bind", "ro"),
		bindMount(MountHosts, guest.Hosts, "bind", "ro"),
		bindMount(MountHostname, guest.Hostname, "bind", "ro"),
		bindMount(MountResolvConf, guest.ResolvConf, "bind", "ro"),
	}
	vols, err := configMounts(s.Mounts)
	if err != nil {
		return Machine{}, fmt.Errorf("service %s: %w", s.Name, err)
	}
	m.Mounts = append(m.Mounts, vols...)
	return m, nil
}

// configMounts describes the configuration's volume, bind and tmpfs
// mounts: never setuid or device files, read-only when asked.
func configMounts(ms []ConfigMount) ([]Mount, error) {
	var out []Mount
	for _, c := range ms {
		opts := []string{"nosuid", "nodev"}
		if c.ReadOnly {
			opts = append(opts, "ro")
		}
		switch c.Type {
		case "tmpfs":
			out = append(out, Mount{Kind: MountTmpfs, Source: "tmpfs", Target: c.Target, Type: "tmpfs", Options: append(opts, "mode=1777")})
		case "bind":
			out = append(out, Mount{Kind: MountBind, Source: c.Source, Target: c.Target, Type: "bind", Options: append(opts, "rbind")})
		default:
			name, err := VolumeName(c)
			if err != nil {
				return nil, err
			}
			out = append(out, Mount{Kind: MountVolume, Source: name, Target: c.Target, Type: "bind", Options: append(opts, "rbind")})
		}
	}
	return out, nil
}

// WithDefaultPath is env with PATH=guest.DefaultPath added when it sets
// no PATH.
func WithDefaultPath(env []string) []string {
	out := append([]string(nil), env...)
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			return out
		}
	}
	return append(out, "PATH="+guest.DefaultPath)
}
