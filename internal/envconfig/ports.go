package envconfig

import (
	"fmt"
	"maps"
	"slices"

	"github.com/covedev/cove/internal/devcontainer"
)

// ServicePort is a forwardPorts entry "SERVICE:PORT": a port of a Docker
// Compose service. Compose services share the dev container's network
// namespace, so the port is reached like the dev container's own; it is
// reported against its service.
type ServicePort struct {
	Service string `json:"service"`
	Port    int    `json:"port"`
}

// Service is the Compose service a forwardPorts entry names for port ("":
// the dev container's, or none).
func (p *Ports) Service(port int) string {
	if p == nil {
		return ""
	}
	for _, s := range p.Services {
		if s.Port == port {
			return s.Service
		}
	}
	return ""
}

// resolvePorts sets dc.Ports from the merged forwardPorts (and appPort)
// and portsAttributes. An entry naming a service is kept only for a
// Compose configuration with that service (services lists them); the
// others are warned about. Malformed entries were warned about by Load.
func resolvePorts(dc *DevcontainerState, merged *devcontainer.Merged, services []string) {
	for _, p := range merged.ForwardPorts() {
		switch {
		case p.Problem != "":
			continue
		case p.Host == "":
		case slices.Contains(services, p.Host):
			dc.Ports.Services = append(dc.Ports.Services, ServicePort{Service: p.Host, Port: p.Port})
		case len(services) == 0:
			dc.Warnings = append(dc.Warnings, fmt.Sprintf("forwardPorts: %q names %q, but only Docker Compose configurations have services; the port is not forwarded (write %d for the dev container's port)", p.String(), p.Host, p.Port))
			continue
		default:
			dc.Warnings = append(dc.Warnings, fmt.Sprintf("forwardPorts: %q names %q, which is not a service of the Docker Compose configuration (services: %v); the port is not forwarded", p.String(), p.Host, services))
			continue
		}
		if !slices.Contains(dc.Ports.Forward, p.Port) {
			dc.Ports.Forward = append(dc.Ports.Forward, p.Port)
		}
	}
	attrs := func(prop string, a devcontainer.PortAttributes) PortAttrs {
		out := PortAttrs{Label: a.Label, OnAutoForward: a.OnAutoForward, Protocol: a.Protocol}
		if a.Protocol != "" && a.Protocol != "http" && a.Protocol != "https" {
			dc.Warnings = append(dc.Warnings, fmt.Sprintf("%s.protocol: %q is ignored: write \"http\" or \"https\"", prop, a.Protocol))
			out.Protocol = ""
		}
		return out
	}
	pats := slices.Sorted(maps.Keys(merged.PortsAttributes()))
	for _, pat := range pats {
		if dc.Ports.Attrs == nil {
			dc.Ports.Attrs = map[string]PortAttrs{}
		}
		dc.Ports.Attrs[pat] = attrs(fmt.Sprintf("portsAttributes[%q]", pat), merged.PortsAttributes()[pat])
	}
	if o := merged.OtherPortsAttributes(); o != nil {
		a := attrs("otherPortsAttributes", *o)
		dc.Ports.Other = &a
	}
}

// composeServices are the names of the services of a Compose
// configuration (nil for none).
func composeServices(in *ComposeInput) []string {
	if in == nil || in.Project == nil {
		return nil
	}
	var out []string
	for _, s := range in.Project.Services {
		out = append(out, s.Name)
	}
	return out
}
