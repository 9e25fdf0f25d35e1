package runner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/usererr"
)

// Bind mounts whose source is inside the environment's workspace (the
// repository for workspaceMount, Docker Compose bind volumes) are never
// handed to the runtime by their path: the environment owns that tree and
// could swap a directory for a symlink to the host's / between a check and
// runc's mount (F5, F6 of the 2026-12 review). Instead the runner resolves
// the source once, inside the workspace, to a descriptor, mounts that at a
// staging point in a root-owned directory (confine.Stage), and gives the
// runtime the staging point. The staged mounts live as long as the
// container and are removed with its root file system.

// stager stages the bind sources of one container.
type stager struct {
	workspace string // the environment's workspace directory (trusted path)
	dir       string // the container's staging directory
	n         int
}

// newStager empties the container's staging directory (a mount left by an
// earlier start is replaced, never reused).
func newStager(workspace, dir string) (*stager, error) {
	if err := unstageAll(dir); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o711); err != nil {
		return nil, err
	}
	return &stager{workspace: workspace, dir: dir}, nil
}

// stage resolves rel inside the workspace — how says whether links may be
// followed (as far as the workspace root) or not at all — and returns the
// staging point that now holds it.
func (s *stager) stage(rel string, how confine.Resolve, what string) (string, error) {
	ws, err := confine.OpenDir(s.workspace)
	if err != nil {
		return "", err
	}
	defer ws.Close()
	src, err := ws.OpenPath(rel, how)
	if err != nil {
		if errors.Is(err, confine.ErrEscape) {
			return "", usererr.Wrap(err, "%s: its source was replaced by a symlink; only directories of the checkout can be mounted", what)
		}
		return "", usererr.Wrap(err, "%s: its source %s is gone", what, rel)
	}
	defer src.Close()
	target := filepath.Join(s.dir, strconv.Itoa(s.n))
	s.n++
	if err := confine.Stage(src, target); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return target, nil
}

// workspaceRel is the path of a host path below the workspace, relative to
// it ("" if it is not below it).
func workspaceRel(workspace, p string) (string, bool) {
	rel, err := filepath.Rel(workspace, p)
	if err != nil || !filepath.IsLocal(rel) && rel != "." {
		return "", false
	}
	return rel, true
}

// unstageAll removes every staging point in dir, and dir itself.
func unstageAll(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		errs = append(errs, confine.Unstage(filepath.Join(dir, e.Name())))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// Nothing is mounted below any more: removing cannot reach the
	// workspace.
	return os.RemoveAll(dir)
}

// unstageEnvironment removes the staging points of the environment's dev
// container and of its services (whatever is on disk: also after a crash).
func unstageEnvironment(lay envdir.Layout) error {
	svcs, _ := filepath.Glob(filepath.Join(lay.Dir, "svc", "*", "mnt"))
	var errs []error
	for _, d := range append([]string{lay.Mnt()}, svcs...) {
		errs = append(errs, unstageAll(d))
	}
	return errors.Join(errs...)
}

// quiescentRepo returns the repository's checkout for the image step, which
// reads devcontainer.json, Compose files, local features and Dockerfile
// build contexts from it as root. That is safe only on a tree nobody
// changes while it is read, whose root is a real directory: the step runs
// with the environment stopped (no process of it can race the checks that
// every read makes), and the checkout directory itself must not have been
// replaced by a symlink (its path is then the workspace's own, which only
// root can write).
func (im *imageStep) quiescentRepo(ctx context.Context, envID string, lay envdir.Layout, st *envState) (string, error) {
	ids := []string{envID}
	if st.Image.Compose != nil {
		for _, s := range st.Image.Compose.Services {
			ids = append(ids, svcID(envID, s.Name))
		}
	}
	for _, id := range ids {
		cs, err := im.rt.State(ctx, id)
		if err != nil {
			return "", err
		}
		if cs.Status != runtime.StatusAbsent && cs.Status != runtime.StatusStopped {
			return "", fmt.Errorf("container %s is %s while its configuration is read", id, cs.Status)
		}
	}
	ws, err := confine.OpenDir(lay.Workspace())
	if err != nil {
		return "", err
	}
	defer ws.Close()
	repo, err := ws.OpenDir(st.Content.RepoName, confine.Beneath)
	if err != nil {
		return "", usererr.Wrap(err, "the repository's checkout /workspaces/%s is not a directory any more (replaced by a symlink?): rebuild cannot read its configuration", st.Content.RepoName)
	}
	repo.Close()
	return filepath.Join(lay.Workspace(), st.Content.RepoName), nil
}

// protectEnvDir keeps the environment's host directory (its overlay root
// file system with the image's set-id files, its workspace, its volumes)
// out of every host user's reach but root's and the environment's own:
// root-owned, group the environment's root group, mode 0710. The
// environment's processes reach what they need through their mount
// namespace, never through this path; runc (as the environment's root)
// and the clone (likewise) only traverse it.
func protectEnvDir(lay envdir.Layout, st *envState) error {
	f, err := os.Open(lay.Dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Chown(os.Geteuid(), int(st.IDMap.HostID)); err != nil { // the runner's user: root in production
		return err
	}
	return f.Chmod(0o710)
}
