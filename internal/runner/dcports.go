package runner

import (
	"github.com/covedev/cove/internal/envconfig"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// decoratePort sets p's forwarded flag, label and onAutoForward from
// devcontainer.json's port settings.
func decoratePort(ports *envconfig.Ports, p *covev1.Port) {
	fwd, a := ports.Attributes(int(p.Port))
	p.Forwarded = fwd
	if a != nil {
		p.Label, p.OnAutoForward = a.Label, a.OnAutoForward
	}
}
