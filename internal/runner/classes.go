package runner

import (
	"fmt"
	"syscall"

	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/netenv"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
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

// withDisk is cs with the disk size of every class that sets none filled
// in: the size (free and used) of the file system holding dataDir, where
// the environments' workspaces, upper directories and volumes live. A
// class with its own disk size keeps it. Without this a class advertised
// 0 bytes, so any hostRequirements.storage failed.
func withDisk(cs []*covev1.EnvironmentClass, dataDir string) ([]*covev1.EnvironmentClass, error) {
	var size int64
	out := make([]*covev1.EnvironmentClass, 0, len(cs))
	for _, c := range cs {
		if c.GetDiskBytes() == 0 {
			if size == 0 {
				var fs syscall.Statfs_t
				if err := syscall.Statfs(dataDir, &fs); err != nil {
					return nil, fmt.Errorf("size of the file system holding %s: %w", dataDir, err)
				}
				size = int64(fs.Blocks) * fs.Frsize
			}
			c = proto.Clone(c).(*covev1.EnvironmentClass)
			c.DiskBytes = size
		}
		out = append(out, c)
	}
	return out, nil
}
