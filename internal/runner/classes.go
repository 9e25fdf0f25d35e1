package runner

import (
	"github.com/covedev/cove/internal/netenv"
	"github.com/covedev/cove/internal/runtime"
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

// resources are the limits of class id's containers.
func (cs classes) resources(id string) runtime.Resources {
	c := cs.find(id)
	if c == nil {
		return runtime.Resources{}
	}
	return runtime.Resources{CPUMillis: int64(c.GetCpus()) * 1000, MemoryBytes: c.GetMemoryBytes(), Pids: int64(c.GetPids())}
}
