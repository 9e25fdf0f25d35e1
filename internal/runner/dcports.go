package runner

import (
	"github.com/covedev/cove/internal/envconfig"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// decoratePort sets p's forwarded flag, label, onAutoForward, protocol and
// Compose service from devcontainer.json's port settings.
func decoratePort(ports *envconfig.Ports, p *covev1.Port) {
	fwd, a := ports.Attributes(int(p.Port))
	p.Forwarded = fwd
	if a != nil {
		p.Label, p.OnAutoForward, p.Protocol = a.Label, a.OnAutoForward, a.Protocol
	}
	p.Service = ports.Service(int(p.Port))
}

// portHTTPS reports whether devcontainer.json says port speaks HTTPS
// (portsAttributes.protocol), so the port proxy talks TLS to it.
func portHTTPS(ports *envconfig.Ports, port int) bool {
	_, a := ports.Attributes(port)
	return a != nil && a.Protocol == "https"
}

// volumesStatus lists the environment's volumes for its status.
func volumesStatus(workspace string, st *envState) []*covev1.Volume {
	if st == nil {
		return nil
	}
	var out []*covev1.Volume
	for _, v := range envconfig.Volumes(&st.Image, workspace) {
		out = append(out, &covev1.Volume{Kind: v.Kind, Name: v.Name, Target: v.Target, Service: v.Service})
	}
	return out
}
