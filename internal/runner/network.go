package runner

import (
	"context"
	"fmt"
	"os"

	"github.com/covedev/cove/internal/netenv"
)

// policy is the network policy of an environment class.
func (r *Runner) policy(class string) netenv.Policy {
	for _, c := range r.cfg.Classes {
		if c.GetId() == class {
			return netenv.Policy{Egress: c.GetEgressPolicy(), Allow: c.GetEgressAllow(),
				EgressRate: c.GetEgressRateBits(), IngressRate: c.GetIngressRateBits()}
		}
	}
	return netenv.Policy{}
}

// attachNetwork gives the environment its network namespace, address and
// rules (idempotent) and writes the files it sees as /etc/resolv.conf and
// /etc/hosts. Without networking configured, environments have loopback
// only and netnsPath is "".
func (r *Runner) attachNetwork(ctx context.Context, id, name, class string, lay layout, st *envState) (netnsPath string, err error) {
	if r.cfg.Network == nil {
		return "", os.WriteFile(lay.hosts(), []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t"+name+"\n"), 0o644)
	}
	att, err := r.cfg.Network.Setup(ctx, id, name, r.policy(class), st.IDMap)
	if err != nil {
		return "", fmt.Errorf("network: %w", err)
	}
	if err := os.WriteFile(lay.resolvConf(), []byte(att.ResolvConf), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(lay.hosts(), []byte(att.Hosts), 0o644); err != nil {
		return "", err
	}
	if ip := att.IP.String(); st.IP != ip {
		st.IP = ip
		if err := saveState(lay.state(), st); err != nil {
			return "", err
		}
	}
	return att.NetNSPath, nil
}

// detachNetwork releases the environment's namespace, address and rules.
func (r *Runner) detachNetwork(ctx context.Context, id string) error {
	if r.cfg.Network == nil {
		return nil
	}
	return r.cfg.Network.Teardown(ctx, id)
}
