package features

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/registryerr"
	"github.com/covedev/cove/internal/usererr"
)

// fetchTarball downloads a feature tarball; its digest is the sha256 of the
// bytes served.
func (r *Resolver) fetchTarball(ctx context.Context, id string) (digest, dir string, err error) {
	policy := r.fetchPolicy()
	u, err := checkTarballURL(id, policy)
	if err != nil {
		return "", "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", "", usererr.Wrap(errdefs.InvalidArgument(err), "invalid feature URL %q", id)
	}
	// The policy's client: public addresses only (unless allowed), no
	// redirect from https to http, at most hostfetch.MaxRedirects.
	subj := tarballSubject(id, u)
	resp, err := policy.Client().Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		return "", "", subj.Error(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The status code only: the reason phrase and body are the server's.
		return "", "", subj.Status(resp.StatusCode)
	}
	f, err := os.CreateTemp(filepath.Join(r.CacheDir, "tmp"), "tarball-")
	if err != nil {
		return "", "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(resp.Body, maxFeatureSize+1))
	if err != nil {
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		return "", "", usererr.Wrap(errdefs.Unavailable(err), "fetch feature %q: download interrupted, try again", id)
	}
	if n > maxFeatureSize {
		return "", "", errdefs.InvalidArgument(usererr.New("feature %q is larger than 1 GiB", id))
	}
	digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	if dir, ok := r.cached(digest); ok {
		return digest, dir, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", "", err
	}
	tmp, err := r.tempDir()
	if err != nil {
		return "", "", err
	}
	if err := untar(ctx, f, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", "", usererr.Wrap(errdefs.InvalidArgument(err), "feature %q is not a valid feature tarball: %v", id, err)
	}
	dir, err = r.commit(tmp, digest)
	return digest, dir, err
}

// tarballSubject names a tarball fetch in messages: the status code and
// root causes only, never anything the server sent (a redirect's location
// included).
func tarballSubject(id string, u *url.URL) registryerr.Subject {
	return registryerr.Subject{Kind: "feature", Ref: id, Host: u.Host, Prefix: fmt.Sprintf("fetch feature %q: ", id), Server: "server " + u.Host}
}

// fetchLocal hashes a feature directory in the repository and copies it into
// the cache, so later edits of the checkout do not change what is installed.
// The directory is resolved inside the repository (symlinks in the
// repository are followed only as far as its root) and read through
// descriptors: nothing outside the repository is ever read.
func (r *Resolver) fetchLocal(ctx context.Context, id, configDir string) (digest, dir string, err error) {
	root := r.RootDir
	if root == "" {
		root = configDir
	}
	rel, err := filepath.Rel(root, filepath.Join(configDir, filepath.FromSlash(id)))
	if err != nil || !filepath.IsLocal(rel) && rel != "." {
		return "", "", errdefs.InvalidArgument(usererr.New("local feature %q is outside the repository", id))
	}
	repo, err := confine.OpenDir(root)
	if err != nil {
		return "", "", fmt.Errorf("repository dir: %w", err)
	}
	defer repo.Close()
	src, err := repo.OpenDir(filepath.ToSlash(rel), confine.InRoot)
	if err != nil {
		return "", "", errdefs.NotFound(usererr.New("local feature %q not found next to devcontainer.json (or not a directory)", id))
	}
	defer src.Close()
	if digest, err = dirDigest(ctx, src); err != nil {
		return "", "", fmt.Errorf("hash local feature %s: %w", id, err)
	}
	if dir, ok := r.cached(digest); ok {
		return digest, dir, nil
	}
	tmp, err := r.tempDir()
	if err != nil {
		return "", "", err
	}
	if err := copyTree(ctx, src, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", "", fmt.Errorf("copy local feature %s: %w", id, err)
	}
	dir, err = r.commit(tmp, digest)
	return digest, dir, err
}
