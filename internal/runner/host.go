package runner

import (
	"context"
	"fmt"
	"slices"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/mountinfo"
	"github.com/covedev/cove/internal/passwd"
	"github.com/covedev/cove/internal/sshgw"
)

// agentEndpoint is how the runner reaches the agent of the environment's
// dev container.
func (r *Runner) agentEndpoint(envID string) agentclient.Endpoint {
	return r.keys.endpoint(r.layout(envID).AgentSocket(), envID)
}

// serviceEndpoint is how the runner reaches a sibling service's agent.
func (r *Runner) serviceEndpoint(lay envdir.Layout, envID, service string) agentclient.Endpoint {
	return r.keys.endpoint(lay.Service(service).AgentSocket(), svcID(envID, service))
}

// checkNoMounts fails if anything at or under dir is a mount point (from
// mountinfo: bind and idmapped mounts of the same file system too), so
// that RemoveAll can never descend into shared image layers or a staged
// workspace.
func checkNoMounts(dir string) error {
	mps, err := mountinfo.Under(dir)
	if err != nil {
		return err
	}
	if len(mps) > 0 {
		slices.Sort(mps)
		return fmt.Errorf("refusing to remove %s: %s is still mounted", dir, mps[0])
	}
	return nil
}

// lookupUser resolves an image user ("name", "uid", "name:group",
// "uid:gid"; "" is root) to ids inside the environment via its
// /etc/passwd and /etc/group (package passwd's rules, the agent's), read
// inside rootfs: a link there never leads to the host's files.
func lookupUser(rootfs, spec string) (uint32, uint32, error) {
	root, err := confine.OpenDir(rootfs)
	if err != nil {
		return 0, 0, err
	}
	defer root.Close()
	u, err := passwd.Lookup(root.FS(confine.InRoot), spec)
	if err != nil {
		return 0, 0, err
	}
	return u.UID, u.GID, nil
}

// ResolveEnvironment implements sshgw.Resolver: only environments this
// runner has running are reachable.
func (r *Runner) ResolveEnvironment(ctx context.Context, envID string) (sshgw.Target, error) {
	r.mu.Lock()
	w, ok := r.workers[envID]
	r.mu.Unlock()
	if !ok || !w.isRunning() {
		return sshgw.Target{}, fmt.Errorf("environment %s is not running on this runner", envID)
	}
	env := w.latest()
	ep := r.agentEndpoint(envID)
	return sshgw.Target{
		OwnerID:      env.GetMetadata().GetOwnerId(),
		AgentSocket:  ep.Socket,
		AgentSigner:  ep.Signer,
		AgentHostKey: ep.HostKey,
	}, nil
}
