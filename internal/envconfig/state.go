package envconfig

import (
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/covedev/cove/internal/compose"
	"github.com/covedev/cove/internal/lifecycle"
)

// The types in this file are persisted in the environment's state file:
// their JSON names and shapes are those the runner has always written
// (dcState, composeState, svcState, dcMount, dcPorts before), so a state
// written by an older runner decodes into them. Add fields; never rename
// or retype one.

// Resolved is an environment's resolved configuration, as the state file
// keeps it: the image step's section ("image"), with its JSON names.
type Resolved struct {
	// Ref is the dev container's image as the environment records it (a
	// reference, or "built from ..."); Digest its manifest digest; Layers
	// its unpacked layers (opaque here), bottom first, to which the runner
	// adds a cached features layer.
	Ref    string   `json:"ref,omitempty"`
	Digest string   `json:"digest,omitempty"`
	Layers []string `json:"layers,omitempty"`
	// User is the user sessions run as (the image's, else containerUser,
	// else remoteUser).
	User string `json:"user,omitempty"`
	// Env is the image's environment (with Compose, the dev service's
	// environment over it).
	Env []string `json:"env,omitempty"`
	// DC is what devcontainer.json (merged with image and feature
	// metadata) asks; set by every resolution, with or without a
	// devcontainer.json.
	DC *DevcontainerState `json:"devcontainer,omitempty"`
	// Compose is what a Docker Compose configuration asks (nil for one
	// container).
	Compose *ComposeState `json:"compose,omitempty"`
}

// DevcontainerState is what the runner resolved from devcontainer.json
// (with image and feature metadata merged), persisted with the
// environment. FeaturesKey and FeaturesPending are the runner's: it keys
// the features cache and looks for a cached layer after resolution, which
// leaves them zero.
type DevcontainerState struct {
	ConfigPath      string `json:"configPath,omitempty"` // relative to the repository
	Name            string `json:"name,omitempty"`       // devcontainer.json's name
	WorkspaceFolder string `json:"workspaceFolder,omitempty"`
	// MountTarget is where the repository appears (workspaceMount's target),
	// besides /workspaces/<repo>.
	MountTarget string `json:"mountTarget,omitempty"`
	// Mounts are devcontainer volume and tmpfs mounts: environment-local.
	Mounts []ConfigMount `json:"mounts,omitempty"`
	// Ports are forwardPorts and portsAttributes.
	Ports Ports `json:"ports,omitempty"`
	// Feature entrypoints (install order) and, when overrideCommand is
	// false, the image's ENTRYPOINT+CMD: the agent starts them.
	Entrypoints []string `json:"entrypoints,omitempty"`
	Command     []string `json:"command,omitempty"`
	WorkingDir  string   `json:"workingDir,omitempty"`
	// From runArgs' safe subset.
	Hostname     string          `json:"hostname,omitempty"`
	AddHosts     []string        `json:"addHosts,omitempty"`
	RemoteUser   string          `json:"remoteUser,omitempty"`
	ContainerEnv []string        `json:"containerEnv,omitempty"` // KEY=VALUE, expanded
	RemoteEnv    []string        `json:"remoteEnv,omitempty"`
	UserEnvProbe string          `json:"userEnvProbe,omitempty"`
	Hooks        lifecycle.Hooks `json:"hooks"`
	FeaturesKey  string          `json:"featuresKey,omitempty"`
	// FeaturesPending: no cached layer has the features: they are
	// installed at the first start (then cached).
	FeaturesPending bool     `json:"featuresPending,omitempty"`
	Warnings        []string `json:"warnings,omitempty"`
	Extensions      []string `json:"extensions,omitempty"`
	Customizations  string   `json:"customizations,omitempty"`

	// Features are the features of FeaturesKey, in install order
	// (dependencies included): what `cove env get` lists once they are
	// installed. Set by the runner with FeaturesKey.
	Features []InstalledFeature `json:"features,omitempty"`
}

// ConfigMount is a mount the configuration asks for: a volume (an
// environment-local directory named by Source, or anonymous), a bind
// mount of a directory of the checkout (Source is its path as Compose
// resolved it) or a tmpfs.
type ConfigMount struct {
	Type     string `json:"type"`
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Ports are devcontainer.json's port settings.
type Ports struct {
	Forward []int                `json:"forward,omitempty"`
	Attrs   map[string]PortAttrs `json:"attrs,omitempty"` // by port or range "3000-3005"
	Other   *PortAttrs           `json:"other,omitempty"`
	// Services are the forwardPorts entries "SERVICE:PORT" naming a
	// Docker Compose service (its port is also in Forward).
	Services []ServicePort `json:"services,omitempty"`
}

// PortAttrs are the attributes of a port that cove reports.
type PortAttrs struct {
	Label         string `json:"label,omitempty"`
	OnAutoForward string `json:"onAutoForward,omitempty"`
	// Protocol is "http" or "https": how the port proxy speaks to it.
	Protocol string `json:"protocol,omitempty"`
}

// ForwardPorts are the ports to forward (nil for nil p).
func (p *Ports) ForwardPorts() []int {
	if p == nil {
		return nil
	}
	return p.Forward
}

// Attributes are what the port settings say of port: whether it is
// forwarded, and the portsAttributes entry whose port or range holds it,
// else otherPortsAttributes (nil when neither applies). When several
// patterns hold the port, the first in sorted order wins.
func (p *Ports) Attributes(port int) (forwarded bool, attrs *PortAttrs) {
	if p == nil {
		return false, nil
	}
	forwarded = slices.Contains(p.Forward, port)
	pats := make([]string, 0, len(p.Attrs))
	for pat := range p.Attrs {
		pats = append(pats, pat)
	}
	sort.Strings(pats)
	for _, pat := range pats {
		lo, hi, isRange := strings.Cut(pat, "-")
		l, err1 := strconv.Atoi(lo)
		h := l
		var err2 error
		if isRange {
			h, err2 = strconv.Atoi(hi)
		}
		if err1 == nil && err2 == nil && port >= l && port <= h {
			a := p.Attrs[pat]
			return forwarded, &a
		}
	}
	if p.Other != nil {
		o := *p.Other
		return forwarded, &o
	}
	return forwarded, nil
}

// ComposeState is what the runner resolved from a Docker Compose
// configuration. The dev service is the environment's main container (the
// one SSH lands in); every other service runs beside it as a sibling
// container in the same network namespace, user namespace range and
// cgroup.
type ComposeState struct {
	Project    string `json:"project"`
	DevService string `json:"devService"`
	// Order is every service's name, the dev service's included, in start
	// order (each after what it depends on).
	Order []string `json:"order"`
	// DevDependsOn is what the dev service waits for before it starts.
	DevDependsOn map[string]compose.Condition `json:"devDependsOn,omitempty"`
	// Services are the siblings, in start order.
	Services []ServiceState `json:"services,omitempty"`
}

// Service returns the sibling named name.
func (c *ComposeState) Service(name string) (*ServiceState, bool) {
	for i := range c.Services {
		if c.Services[i].Name == name {
			return &c.Services[i], true
		}
	}
	return nil, false
}

// ServiceState is one sibling service, ready to start.
type ServiceState struct {
	Name        string   `json:"name"`
	Image       string   `json:"image"`
	ImageDigest string   `json:"imageDigest"`
	Layers      []string `json:"layers"`
	Env         []string `json:"env,omitempty"`
	User        string   `json:"user,omitempty"`
	// Command is the resolved ENTRYPOINT + CMD.
	Command    []string                     `json:"command,omitempty"`
	WorkingDir string                       `json:"workingDir,omitempty"`
	Hostname   string                       `json:"hostname,omitempty"`
	Mounts     []ConfigMount                `json:"mounts,omitempty"`
	DependsOn  map[string]compose.Condition `json:"dependsOn,omitempty"`
	// Healthcheck is the compose file's, else the image's; nil if neither.
	Healthcheck *compose.Healthcheck `json:"healthcheck,omitempty"`
}
