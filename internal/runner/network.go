package runner

import (
	"context"
	"fmt"
	"os"

	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/netenv"
)

// network gives environments (and the Dockerfile builder) their network:
// *netenv.Manager (a namespace each, a bridge, NAT and policy), or
// loopbackNetwork when the runner has no networking configured.
type network interface {
	Setup(ctx context.Context, id, hostname string, p netenv.Policy, ids idmap.Range) (netenv.Attachment, error)
	Teardown(ctx context.Context, id string) error
	Start(ctx context.Context) error
	Close(ctx context.Context) error
	// Namespaced reports whether environments get network namespaces of
	// their own (what Docker Compose services need to reach each other).
	Namespaced() bool
}

// loopbackNetwork is no networking: an environment shares nothing but has
// only loopback (an empty NetNSPath makes the runtime give it a namespace
// of its own with lo alone).
type loopbackNetwork struct{}

func (loopbackNetwork) Setup(_ context.Context, _, hostname string, _ netenv.Policy, _ idmap.Range) (netenv.Attachment, error) {
	return netenv.Attachment{Hostname: hostname,
		Hosts: "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + hostname + "\n"}, nil
}
func (loopbackNetwork) Teardown(context.Context, string) error { return nil }
func (loopbackNetwork) Start(context.Context) error            { return nil }
func (loopbackNetwork) Close(context.Context) error            { return nil }
func (loopbackNetwork) Namespaced() bool                       { return false }

// networkState is the network attachment's section (written by whichever
// step attaches: the clone or the start step).
type networkState struct {
	IP string `json:"ip,omitempty"` // the environment's address on the runner's network
}

// envNet attaches environments to the network with their class's policy.
type envNet struct {
	n       network
	classes classes
}

// attachment is what a container joins: its network namespace ("" for a
// namespace of its own with loopback only).
type attachment struct{ netns string }

// attach gives the environment its network namespace, address and rules
// (idempotent), writes the files it sees as /etc/resolv.conf and
// /etc/hosts, and records its address.
func (a envNet) attach(ctx context.Context, e *stepEnv) (attachment, error) {
	att, err := a.n.Setup(ctx, e.id(), e.env.GetMetadata().GetName(), a.classes.policy(e.env.GetSpec().GetClassId()), e.st.IDMap)
	if err != nil {
		return attachment{}, fmt.Errorf("network: %w", err)
	}
	if att.ResolvConf != "" {
		if err := os.WriteFile(e.lay.ResolvConf(), []byte(att.ResolvConf), 0o644); err != nil {
			return attachment{}, err
		}
	}
	if err := os.WriteFile(e.lay.Hosts(), []byte(att.Hosts), 0o644); err != nil {
		return attachment{}, err
	}
	if att.IP.IsValid() {
		e.st.Network.IP = att.IP.String()
	}
	return attachment{netns: att.NetNSPath}, nil
}

// detach releases the environment's namespace, address and rules.
func (a envNet) detach(ctx context.Context, id string) error { return a.n.Teardown(ctx, id) }
