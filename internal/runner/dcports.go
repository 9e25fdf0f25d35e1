package runner

import (
	"slices"
	"strconv"
	"strings"

	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// dcPorts are devcontainer.json's port settings.
type dcPorts struct {
	Forward []int                  `json:"forward,omitempty"`
	Attrs   map[string]dcPortAttrs `json:"attrs,omitempty"` // by port or range "3000-3005"
	Other   *dcPortAttrs           `json:"other,omitempty"`
}

type dcPortAttrs struct {
	Label         string `json:"label,omitempty"`
	OnAutoForward string `json:"onAutoForward,omitempty"`
}

func (d *dcPorts) forwardPorts() []int {
	if d == nil {
		return nil
	}
	return d.Forward
}

// decorate sets p's label and onAutoForward from portsAttributes.
func (d *dcPorts) decorate(p *covev1.Port) {
	if d == nil {
		return
	}
	p.Forwarded = slices.Contains(d.Forward, int(p.Port))
	a := d.Other
	for pat, attrs := range d.Attrs {
		lo, hi, isRange := strings.Cut(pat, "-")
		l, err1 := strconv.Atoi(lo)
		h := l
		var err2 error
		if isRange {
			h, err2 = strconv.Atoi(hi)
		}
		if err1 == nil && err2 == nil && int(p.Port) >= l && int(p.Port) <= h {
			a = &attrs
			break
		}
	}
	if a != nil {
		p.Label, p.OnAutoForward = a.Label, a.OnAutoForward
	}
}
