package runner

import (
	"testing"

	"github.com/covedev/cove/internal/envconfig"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// A forwarded "SERVICE:PORT" is reported against its service and
// portsAttributes.protocol reaches the status and the proxy.
func TestDecoratePortServiceProtocol(t *testing.T) {
	ports := &envconfig.Ports{Forward: []int{3000, 5432},
		Attrs:    map[string]envconfig.PortAttrs{"3000": {Label: "web", Protocol: "https"}},
		Services: []envconfig.ServicePort{{Service: "db", Port: 5432}}}
	web, db, other := &covev1.Port{Port: 3000}, &covev1.Port{Port: 5432}, &covev1.Port{Port: 9999}
	for _, p := range []*covev1.Port{web, db, other} {
		decoratePort(ports, p)
	}
	if !web.Forwarded || web.Label != "web" || web.Protocol != "https" || web.Service != "" {
		t.Errorf("3000 = %v", web)
	}
	if !db.Forwarded || db.Service != "db" || db.Protocol != "" {
		t.Errorf("5432 = %v", db)
	}
	if other.Forwarded || other.Service != "" || other.Protocol != "" {
		t.Errorf("9999 = %v", other)
	}
	if !portHTTPS(ports, 3000) || portHTTPS(ports, 5432) || portHTTPS(nil, 3000) {
		t.Error("portHTTPS disagrees with portsAttributes")
	}
}
