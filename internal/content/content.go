// Package content gets a repository into an environment's workspace without
// ever running git as host root on a repository's behalf.
//
// # How a clone runs
//
// Remote sources (https, http, ssh, git, scp-like "git@host:path") are
// cloned by git running as root inside a new user namespace mapped to the
// environment's id range: on the host it is the unprivileged uid
// IDMap.HostID, without supplementary groups, so it can only write where the
// environment's ids may (the workspace, which is given to HostID+UID first)
// and read what any unprivileged user may. Git runs with an empty
// environment, HOME in the staging directory, no system or global
// configuration, no credential helpers, no prompts (GIT_TERMINAL_PROMPT=0,
// ssh BatchMode), no hooks (empty template, core.hooksPath=/dev/null) and
// GIT_ALLOW_PROTOCOL limited to the transports the source needs.
//
// Local sources (an absolute path or file:// URL, for `cove up`) usually
// cannot be read by that uid (they live under /root or a 0700 home). They
// are first staged by host root with `git clone --bare --no-local`: a bare
// copy made through git's pack protocol, which transfers only reachable
// objects, checks them, checks nothing out and runs no hook. The staged copy
// is given to HostID and the unprivileged clone is made from it; then
// remote.origin.url is set back to the original path or URL.
//
// Submodules are not cloned (--no-recurse-submodules): .gitmodules may name
// arbitrary URLs, and fetching them needs credentials and a policy cove does
// not have yet. Users can run `git submodule update --init` inside the
// environment.
//
// Ownership is handed to the environment's user (UID:GID inside) by
// `chown -R -h` running in the same kind of user namespace, so only ids of
// the environment's range are ever written, and symlinks are changed
// themselves, never followed.
//
// # What a hostile repository could try
//
//   - Symlinks in the tree (to /etc/passwd, /root/.ssh): git checks them out as
//     links and never writes through them; chown -h changes the links only,
//     and anything outside the range is not owned by a mapped id, so even a
//     followed link could not be changed from inside the namespace.
//   - Hooks, filters, fsmonitor, pagers in a remote repository's config: a
//     clone never reads the remote's config, and ours disables hooks.
//   - A local source's config and layout (alternates, gitdir files, symlinks
//     in objects/): read by host root while staging. --no-local makes git
//     use upload-pack, which ignores repository-level hooks such as
//     uploadpack.packObjectsHook, and sends only objects reachable from refs.
//     A local path is still read with root's rights, so only the runner's
//     operator should be able to name one (`cove up`); the server must refuse
//     local paths from remote users.
//   - Huge repositories or slow servers: bounded by ctx and the workspace's
//     disk quota, which the caller owns.
//   - Network: the clone uses the host's network namespace, so a URL may
//     reach services on the runner host that the environment itself cannot.
//     Running the clone in the environment's network namespace is a known gap.
//
// # Idempotence
//
// A completion marker, StagingDir+".content-done" (a root-owned file outside
// the workspace, which the environment cannot forge), is written after the
// clone, checkout and chown have succeeded. Clone returns at once when the
// marker exists and the repository directory does; a repository directory
// without the marker is an interrupted clone and is removed and redone. A
// completed workspace is never removed. Callers that restore a workspace from
// a backup must not call Clone for it (or must restore the marker too).
package content

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/covedev/cove/internal/idmap"
)

// Source names a repository and what to check out.
type Source struct {
	// GitURL is an https://, http://, ssh://, git://, file:// URL,
	// git@host:path, or an absolute path on the runner host.
	GitURL string
	// Ref is a branch, a tag or a commit SHA; empty means the remote's
	// default branch.
	Ref string
}

// Options says where and for whom to clone.
type Options struct {
	WorkspaceDir string      // host directory that becomes /workspaces inside the environment
	StagingDir   string      // host directory for temporary staging (per environment), removed after
	IDMap        idmap.Range // the environment's user namespace range
	UID, GID     uint32      // owner of the clone inside the environment (e.g. 1000, or 0)
	Log          *slog.Logger
	// NetNSPath, if set, is the environment's network namespace: the
	// unprivileged clone runs in it, so a URL reaches only what the
	// environment may (not the runner host's services); ResolvConf is then
	// the namespace's resolv.conf.
	NetNSPath  string
	ResolvConf string
	// Sandbox, if set, is the command that starts the clone sandbox (`cove
	// internal-sandbox`, see SandboxMain): git then runs in mount and pid
	// namespaces of its own that hold only the host's programs (read-only)
	// and the workspace and staging directories. The runner always sets
	// it; without it git sees the host's file system (tests).
	Sandbox []string
}

// marker is what the completion marker records.
type marker struct {
	Repo string `json:"repo"`
	URL  string `json:"url"`
	Ref  string `json:"ref,omitempty"`
}

func markerPath(opts Options) string {
	return filepath.Clean(opts.StagingDir) + ".content-done"
}

// Clone clones src into opts.WorkspaceDir/RepoName(src.GitURL) and returns
// that host path. See the package documentation for how and why.
func Clone(ctx context.Context, src Source, opts Options) (repoDir string, err error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kind, err := classify(src.GitURL)
	if err != nil {
		return "", err
	}
	if err := checkRef(src.Ref); err != nil {
		return "", err
	}
	if opts.WorkspaceDir == "" || opts.StagingDir == "" {
		return "", errors.New("clone: WorkspaceDir and StagingDir are required")
	}
	if err := checkRange(opts.IDMap, opts.UID, opts.GID); err != nil {
		return "", fmt.Errorf("clone: %w", err)
	}
	repo := RepoName(src.GitURL)
	dest := filepath.Join(opts.WorkspaceDir, repo)
	mpath := markerPath(opts)
	log = log.With("repo", repo, "url", redact(src.GitURL), "ref", src.Ref)

	_, mErr := os.Stat(mpath)
	_, dErr := os.Lstat(dest)
	switch {
	case mErr == nil && dErr == nil:
		log.Debug("workspace already cloned", "dir", dest)
		return dest, nil
	case mErr == nil:
		// Completed once, then the repository was removed from inside the
		// environment: nothing to lose by cloning again.
		if err := os.Remove(mpath); err != nil {
			return "", fmt.Errorf("remove stale clone marker: %w", err)
		}
	case !errors.Is(mErr, fs.ErrNotExist):
		return "", fmt.Errorf("clone marker: %w", mErr)
	case dErr == nil:
		log.Info("removing interrupted clone", "dir", dest)
		if err := os.RemoveAll(dest); err != nil {
			return "", fmt.Errorf("remove interrupted clone %s: %w", dest, err)
		}
	}

	if err := prepareDirs(opts); err != nil {
		return "", err
	}
	defer func() {
		if rmErr := os.RemoveAll(opts.StagingDir); rmErr != nil {
			log.Warn("remove staging directory", "dir", opts.StagingDir, "err", rmErr)
		}
	}()

	g := &gitRunner{m: opts.IDMap, home: filepath.Join(opts.StagingDir, "home"), url: src.GitURL, netns: opts.NetNSPath,
		sandbox: opts.Sandbox, resolv: opts.ResolvConf, rw: []string{opts.WorkspaceDir, opts.StagingDir}}
	from := src.GitURL
	g.allow = "https:http:ssh:git"
	if kind == localSource {
		staged, err := stage(ctx, log, src.GitURL, opts)
		if err != nil {
			return "", err
		}
		from, g.allow, g.fileAllowed, g.staged = staged, "file", true, staged
		// Cloning the staged copy is a local file copy: no network needed.
		g.netns, g.resolv = "", ""
	}

	log.Info("cloning repository", "dir", dest)
	if err := g.clone(ctx, from, src.Ref, dest); err != nil {
		return "", err
	}
	if kind == localSource {
		if err := g.git(ctx, dest, "config", "remote.origin.url", src.GitURL); err != nil {
			return "", fmt.Errorf("set origin url: %w", err)
		}
	}
	if err := Chown(ctx, dest, opts.IDMap, opts.UID, opts.GID); err != nil {
		return "", err
	}
	if err := writeMarker(mpath, marker{Repo: repo, URL: redact(src.GitURL), Ref: src.Ref}); err != nil {
		return "", err
	}
	log.Info("cloned repository", "dir", dest)
	return dest, nil
}

// prepareDirs creates the workspace (owned by the environment's user) and a
// fresh staging directory (owned by the range's root).
func prepareDirs(opts Options) error {
	m := opts.IDMap
	if err := os.MkdirAll(opts.WorkspaceDir, 0o755); err != nil {
		return fmt.Errorf("create workspace: %w", err)
	}
	if err := os.Lchown(opts.WorkspaceDir, int(m.ToHost(opts.UID)), int(m.ToHost(opts.GID))); err != nil {
		return fmt.Errorf("chown workspace: %w", err)
	}
	if err := os.RemoveAll(opts.StagingDir); err != nil {
		return fmt.Errorf("clean staging directory: %w", err)
	}
	for _, d := range []string{opts.StagingDir, filepath.Join(opts.StagingDir, "home")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create staging directory: %w", err)
		}
		if err := os.Lchown(d, int(m.HostID), int(m.HostID)); err != nil {
			return fmt.Errorf("chown staging directory: %w", err)
		}
	}
	for _, d := range []string{opts.WorkspaceDir, opts.StagingDir} {
		if err := searchable(d, m.HostID); err != nil {
			return fmt.Errorf("clone: %w", err)
		}
	}
	return nil
}

func writeMarker(path string, m marker) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("write clone marker: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write clone marker: %w", err)
	}
	return nil
}

// Chown recursively gives dir (including dir itself) to uid:gid inside the
// environment, by running chown -R -h in a user namespace mapped to m:
// symlinks are not followed, and only files owned by ids of the range can be
// changed.
func Chown(ctx context.Context, dir string, m idmap.Range, uid, gid uint32) error {
	if err := checkRange(m, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", dir, err)
	}
	chown, err := lookPath("chown")
	if err != nil {
		return err
	}
	cmd := execCommand(ctx, chown, "-R", "-h", fmt.Sprintf("+%d:+%d", uid, gid), "--", dir)
	cmd.Env = []string{"PATH=" + basePath, "LC_ALL=C"}
	cmd.Dir = "/"
	cmd.SysProcAttr = userNSAttr(m)
	if err := run(cmd); err != nil {
		return fmt.Errorf("chown %s to %d:%d in %s: %w", dir, uid, gid, m, err)
	}
	return nil
}
