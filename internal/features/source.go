package features

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/hostfetch"
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
		return "", "", usererr.Wrap(err, "invalid feature URL %q", id)
	}
	// The policy's client: public addresses only (unless allowed), no
	// redirect from https to http, at most hostfetch.MaxRedirects.
	resp, err := policy.Client().Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		return "", "", fetchError(id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The status code only: the reason phrase and body are the server's.
		return "", "", usererr.New("fetch feature %q: HTTP %s", id, statusText(resp.StatusCode))
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
		return "", "", usererr.Wrap(err, "fetch feature %q: download interrupted, try again", id)
	}
	if n > maxFeatureSize {
		return "", "", usererr.New("feature %q is larger than 1 GiB", id)
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
		return "", "", usererr.Wrap(err, "feature %q is not a valid feature tarball: %v", id, err)
	}
	dir, err = r.commit(tmp, digest)
	return digest, dir, err
}

// fetchError describes a failed tarball request without repeating anything
// the server sent (a redirect's location included).
func fetchError(id string, err error) error {
	if msg, ok := hostfetch.Explain(err); ok {
		return usererr.Wrap(err, "fetch feature %q: %s", id, msg)
	}
	if msg, ok := tlsProblem(err); ok {
		return usererr.Wrap(err, "fetch feature %q: %s", id, msg)
	}
	if isNetworkError(err) {
		return usererr.Wrap(err, "fetch feature %q: unreachable: %v", id, rootCause(err))
	}
	return usererr.Wrap(err, "fetch feature %q failed", id)
}

// tlsProblem explains a TLS failure.
func tlsProblem(err error) (string, bool) {
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return "the server's TLS certificate is not trusted by this runner", true
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return "the server does not speak TLS", true
	}
	return "", false
}

// rootCause is the innermost dial or DNS error ("dial tcp 203.0.113.7:443:
// connect: connection refused"), which names no server-sent text.
func rootCause(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return de
	}
	return errors.New("network error")
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return fmt.Sprintf("%d %s", code, t)
	}
	return fmt.Sprint(code)
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
		return "", "", usererr.New("local feature %q is outside the repository", id)
	}
	repo, err := confine.OpenDir(root)
	if err != nil {
		return "", "", fmt.Errorf("repository dir: %w", err)
	}
	defer repo.Close()
	src, err := repo.OpenDir(filepath.ToSlash(rel), confine.InRoot)
	if err != nil {
		return "", "", usererr.New("local feature %q not found next to devcontainer.json (or not a directory)", id)
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
