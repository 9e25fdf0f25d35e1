package runner

import (
	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/netenv"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// classes are the environment classes this runner offers.
type classes []*covev1.EnvironmentClass

func (cs classes) find(id string) *covev1.EnvironmentClass {
	for _, c := range cs {
		if c.GetId() == id {
			return c
		}
	}
	return nil
}

// policy is the network policy of class id.
func (cs classes) policy(id string) netenv.Policy {
	c := cs.find(id)
	if c == nil {
		return netenv.Policy{}
	}
	return netenv.Policy{Egress: c.GetEgressPolicy(), Allow: c.GetEgressAllow(),
		EgressRate: c.GetEgressRateBits(), IngressRate: c.GetIngressRateBits()}
}

// resolution is class id as envconfig reads it, with what it allows (nil
// when this runner offers no class of that id).
func (cs classes) resolution(id string, allow devcontainer.Allow) *envconfig.Class {
	c := cs.find(id)
	if c == nil {
		return nil
	}
	return &envconfig.Class{ID: c.GetId(), CPUs: int(c.GetCpus()), MemoryBytes: c.GetMemoryBytes(), DiskBytes: c.GetDiskBytes(),
		Pids: int64(c.GetPids()), Allow: allow}
}
