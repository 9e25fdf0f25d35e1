package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/mountinfo"
	"github.com/covedev/cove/internal/sshgw"
	"github.com/covedev/cove/internal/usererr"
)

// agentEndpoint is how the runner reaches the agent of the environment's
// dev container.
func (r *Runner) agentEndpoint(envID string) agentclient.Endpoint {
	return r.keys.endpoint(r.layout(envID).agentSocket(), envID)
}

// serviceEndpoint is how the runner reaches a sibling service's agent.
func (r *Runner) serviceEndpoint(lay layout, envID, service string) agentclient.Endpoint {
	return r.keys.endpoint(lay.svc(service).agentSocket(), svcID(envID, service))
}

// probeAgent completes an SSH handshake with the agent at ep (its own host
// key, its own client key).
func (r *Runner) probeAgent(ctx context.Context, ep agentclient.Endpoint) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := agentclient.Dial(ctx, ep)
	if err != nil {
		return err
	}
	return c.Close()
}

// isMountPoint reports whether path is the root of a mount (its device
// differs from its parent's, as it does for an overlay).
func isMountPoint(path string) bool {
	var st, parent syscall.Stat_t
	if syscall.Lstat(path, &st) != nil || syscall.Lstat(filepath.Dir(path), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
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

// openInRoot opens the regular file path inside rootfs, resolving symlinks
// as if rootfs were "/", so a file planted by the environment cannot make
// the runner read the host's files (or block on a FIFO).
func openInRoot(rootfs, path string) (*os.File, error) {
	root, err := confine.OpenDir(rootfs)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.Open(path, confine.InRoot)
}

// lookupUser resolves an image user ("name", "uid", "name:group",
// "uid:gid"; "" is root) to ids inside the environment via its
// /etc/passwd and /etc/group.
func lookupUser(rootfs, spec string) (uint32, uint32, error) {
	if spec == "" || spec == "root" {
		return 0, 0, nil
	}
	user, group, hasGroup := strings.Cut(spec, ":")
	var uid, gid uint32
	uidSet, gidSet := false, false
	if n, err := strconv.ParseUint(user, 10, 32); err == nil {
		uid, uidSet = uint32(n), true
	}
	if err := scanColonFile(rootfs, "/etc/passwd", func(f []string) bool {
		if len(f) < 4 || !(f[0] == user || uidSet && f[2] == user) {
			return false
		}
		u, err1 := strconv.ParseUint(f[2], 10, 32)
		g, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return false
		}
		uid, gid, uidSet, gidSet = uint32(u), uint32(g), true, true
		return true
	}); err != nil {
		return 0, 0, err
	}
	if !uidSet {
		return 0, 0, usererr.New("user %q not found in the image's /etc/passwd", user)
	}
	if hasGroup {
		gidSet = false
		if n, err := strconv.ParseUint(group, 10, 32); err == nil {
			gid, gidSet = uint32(n), true
		} else if err := scanColonFile(rootfs, "/etc/group", func(f []string) bool {
			if len(f) < 3 || f[0] != group {
				return false
			}
			g, err := strconv.ParseUint(f[2], 10, 32)
			if err != nil {
				return false
			}
			gid, gidSet = uint32(g), true
			return true
		}); err != nil {
			return 0, 0, err
		}
		if !gidSet {
			return 0, 0, usererr.New("group %q not found in the image's /etc/group", group)
		}
	}
	if !gidSet {
		gid = uid
	}
	return uid, gid, nil
}

// scanColonFile calls match for each line's fields until it returns true.
// A missing file matches nothing.
func scanColonFile(rootfs, path string, match func([]string) bool) error {
	f, err := openInRoot(rootfs, path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read image %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 4<<20))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if match(strings.Split(line, ":")) {
			return nil
		}
	}
	return sc.Err()
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
