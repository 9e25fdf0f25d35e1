package devcontainer

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/covedev/cove/internal/usererr"
)

// Merged is a configuration merged with image (and feature) metadata, as
// the reference CLI's mergedConfiguration. Read it through its methods.
type Merged struct {
	// Config is the devcontainer.json.
	Config *Config
	// Entries are the metadata entries merged, the configuration's last.
	Entries []MetadataEntry
	// Raw is the merged configuration in the reference CLI's JSON shape
	// (onCreateCommands, customizations as arrays per tool, ...).
	Raw map[string]any

	configEntry bool
	t           mergedTyped
	// containerEnv resolves ${containerEnv:VAR} once the container's
	// environment is known (ResolveContainerEnv); nil before.
	containerEnv func(match, name string, args []string) string
}

type mergedTyped struct {
	ContainerEnv         map[string]string         `json:"containerEnv"`
	RemoteEnv            map[string]*string        `json:"remoteEnv"`
	ContainerUser        string                    `json:"containerUser"`
	RemoteUser           string                    `json:"remoteUser"`
	UpdateRemoteUserUID  *bool                     `json:"updateRemoteUserUID"`
	UserEnvProbe         string                    `json:"userEnvProbe"`
	OverrideCommand      *bool                     `json:"overrideCommand"`
	Init                 bool                      `json:"init"`
	Privileged           bool                      `json:"privileged"`
	CapAdd               []string                  `json:"capAdd"`
	SecurityOpt          []string                  `json:"securityOpt"`
	Entrypoints          []string                  `json:"entrypoints"`
	Mounts               []Mount                   `json:"mounts"`
	ForwardPorts         []Port                    `json:"forwardPorts"`
	PortsAttributes      map[string]PortAttributes `json:"portsAttributes"`
	OtherPortsAttributes *PortAttributes           `json:"otherPortsAttributes"`
	HostRequirements     *HostRequirements         `json:"hostRequirements"`
	Customizations       map[string][]any          `json:"customizations"`
	WaitFor              string                    `json:"waitFor"`
}

func (m *Merged) decode() error {
	b, err := json.Marshal(m.Raw)
	if err != nil {
		return fmt.Errorf("marshal merged config: %w", err)
	}
	m.t = mergedTyped{}
	if err := json.Unmarshal(b, &m.t); err != nil {
		return usererr.Wrap(err, "%s: image metadata merged with the configuration is invalid: %v", m.Config.Path, err)
	}
	// Lifecycle hooks are decoded per entry so each keeps its origin.
	for i, e := range m.Entries {
		for _, h := range lifecycleHooks {
			if !truthy(e[h]) {
				continue
			}
			eb, _ := json.Marshal(e[h])
			var c Command
			if err := c.UnmarshalJSON(eb); err != nil {
				return usererr.Wrap(err, "%s: %s from %s: must be a string, an array of strings or an object", m.Config.Path, h, m.origin(i))
			}
		}
	}
	return nil
}

func (m *Merged) origin(i int) string {
	if id, ok := m.Entries[i]["id"].(string); ok && id != "" {
		return id
	}
	if m.configEntry && i == len(m.Entries)-1 {
		return "devcontainer.json"
	}
	return "image metadata"
}

// ContainerEnv is containerEnv merged (last entry wins per variable).
func (m *Merged) ContainerEnv() map[string]string { return maps.Clone(m.t.ContainerEnv) }

// RemoteEnv is remoteEnv merged; a nil value unsets the variable.
func (m *Merged) RemoteEnv() map[string]*string { return maps.Clone(m.t.RemoteEnv) }

// RemoteUser is the user tools and lifecycle commands run as: the last
// remoteUser, else ContainerUser ("" means the image's user).
func (m *Merged) RemoteUser() string {
	if m.t.RemoteUser != "" {
		return m.t.RemoteUser
	}
	return m.t.ContainerUser
}

// ContainerUser is the user the container's processes run as ("" means the
// image's user).
func (m *Merged) ContainerUser() string { return m.t.ContainerUser }

// UpdateRemoteUserUID is updateRemoteUserUID (default true).
func (m *Merged) UpdateRemoteUserUID() bool {
	return m.t.UpdateRemoteUserUID == nil || *m.t.UpdateRemoteUserUID
}

// UserEnvProbe is userEnvProbe (default "loginInteractiveShell").
func (m *Merged) UserEnvProbe() string {
	if m.t.UserEnvProbe == "" {
		return "loginInteractiveShell"
	}
	return m.t.UserEnvProbe
}

// OverrideCommand reports whether the keep-alive loop replaces the image's
// command. The default is true, except for Compose configurations, whose
// service command runs (as in the spec).
func (m *Merged) OverrideCommand() bool {
	if m.t.OverrideCommand != nil {
		return *m.t.OverrideCommand
	}
	_, compose := m.Config.Raw["dockerComposeFile"]
	return !compose
}

// Init reports whether any entry asks for an init process.
func (m *Merged) Init() bool { return m.t.Init }

// Privileged reports whether any entry asks for privileged mode.
func (m *Merged) Privileged() bool { return m.t.Privileged }

// CapAdd is the union of capAdd and the config's runArgs --cap-add.
func (m *Merged) CapAdd() []string { return unionStrings(m.t.CapAdd, m.Config.Run.CapAdd) }

// SecurityOpt is the union of securityOpt and runArgs --security-opt.
func (m *Merged) SecurityOpt() []string {
	return unionStrings(m.t.SecurityOpt, m.Config.Run.SecurityOpt)
}

// Entrypoints are the features' entrypoints, in order.
func (m *Merged) Entrypoints() []string { return slices.Clone(m.t.Entrypoints) }

// Mounts are the mounts merged by target (last wins).
func (m *Merged) Mounts() []Mount { return slices.Clone(m.t.Mounts) }

// ForwardPorts is the union of forwardPorts and the legacy appPort.
func (m *Merged) ForwardPorts() []Port {
	out := slices.Clone(m.t.ForwardPorts)
	for _, p := range m.Config.AppPort {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// PortsAttributes is portsAttributes merged (last wins per port pattern).
func (m *Merged) PortsAttributes() map[string]PortAttributes { return maps.Clone(m.t.PortsAttributes) }

// OtherPortsAttributes is the last otherPortsAttributes, or nil.
func (m *Merged) OtherPortsAttributes() *PortAttributes { return m.t.OtherPortsAttributes }

// HostRequirements takes the largest requirement of every entry, or nil.
func (m *Merged) HostRequirements() *HostRequirements { return m.t.HostRequirements }

// Customizations collects each tool's customizations from every entry.
func (m *Merged) Customizations() map[string][]any { return maps.Clone(m.t.Customizations) }

// Features are the devcontainer.json's features, in file order (install
// order is worked out by internal/features).
func (m *Merged) Features() []Feature { return slices.Clone(m.Config.Features) }

// LifecycleCommand is one command of a lifecycle hook and where it came from
// (a feature id, "image metadata" or "devcontainer.json").
type LifecycleCommand struct {
	Origin  string
	Command Command
}

// Lifecycle are the commands of each hook, collected in order from every
// entry: all of them run, image and features first.
type Lifecycle struct {
	OnCreate      []LifecycleCommand
	UpdateContent []LifecycleCommand
	PostCreate    []LifecycleCommand
	PostStart     []LifecycleCommand
	PostAttach    []LifecycleCommand
	// WaitFor is the hook tools wait for before connecting (default
	// "updateContentCommand").
	WaitFor string
}

// Lifecycle returns the lifecycle commands to run.
func (m *Merged) Lifecycle() Lifecycle {
	l := Lifecycle{WaitFor: m.t.WaitFor}
	if l.WaitFor == "" {
		l.WaitFor = "updateContentCommand"
	}
	dst := map[string]*[]LifecycleCommand{
		"onCreateCommand": &l.OnCreate, "updateContentCommand": &l.UpdateContent,
		"postCreateCommand": &l.PostCreate, "postStartCommand": &l.PostStart, "postAttachCommand": &l.PostAttach,
	}
	for i, e := range m.Entries {
		for _, h := range lifecycleHooks {
			if !truthy(e[h]) {
				continue
			}
			eb, _ := json.Marshal(e[h])
			var c Command
			if c.UnmarshalJSON(eb) != nil || c.IsZero() {
				continue
			}
			if m.configEntry && i == len(m.Entries)-1 {
				c = m.substituteCommand(m.Config.hook(h)) // keeps the file's order of object forms
			}
			*dst[h] = append(*dst[h], LifecycleCommand{Origin: m.origin(i), Command: c})
		}
	}
	return l
}

// ResolveContainerEnv substitutes ${containerEnv:VAR} everywhere but in
// containerEnv itself, once the container's environment is known. The
// variable is defined for remoteEnv and what comes later; inside
// containerEnv it stays as written, as the reference CLI leaves it.
func (m *Merged) ResolveContainerEnv(env map[string]string) error {
	r := containerEnvReplacer(env)
	m.containerEnv = r
	m.Raw = substituteExceptContainerEnv(m.Raw, r)
	for i, e := range m.Entries {
		m.Entries[i] = substituteExceptContainerEnv(e, r)
	}
	return m.decode()
}

// Check is Config.Check for what image metadata and features add (see
// Merged.check).
func (m *Merged) Check(allow Allow) error { return m.check(allow) }

func unionStrings(a, b []string) []string {
	var out []string
	for _, s := range append(slices.Clone(a), b...) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func (c *Config) hook(name string) Command {
	switch name {
	case "onCreateCommand":
		return c.OnCreateCommand
	case "updateContentCommand":
		return c.UpdateContentCommand
	case "postCreateCommand":
		return c.PostCreateCommand
	case "postStartCommand":
		return c.PostStartCommand
	case "postAttachCommand":
		return c.PostAttachCommand
	}
	return Command{}
}

// substituteCommand applies ${containerEnv:VAR} (once resolved) to a
// command taken from the typed configuration.
func (m *Merged) substituteCommand(c Command) Command {
	if m.containerEnv == nil {
		return c
	}
	sub := func(s string) string { return substituteValue(s, m.containerEnv).(string) }
	c.Shell = sub(c.Shell)
	if c.Args != nil {
		args := make([]string, len(c.Args))
		for i, a := range c.Args {
			args[i] = sub(a)
		}
		c.Args = args
	}
	if c.Parallel != nil {
		par := make([]NamedCommand, len(c.Parallel))
		for i, n := range c.Parallel {
			par[i] = NamedCommand{Name: n.Name, Command: m.substituteCommand(n.Command)}
		}
		c.Parallel = par
	}
	return c
}
