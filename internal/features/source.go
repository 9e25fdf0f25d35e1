package features

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/covedev/cove/internal/usererr"
)

// fetchTarball downloads a feature tarball; its digest is the sha256 of the
// bytes served.
func (r *Resolver) fetchTarball(ctx context.Context, id string) (digest, dir string, err error) {
	u, err := checkTarballURL(id)
	if err != nil {
		return "", "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", "", usererr.Wrap(err, "invalid feature URL %q", id)
	}
	resp, err := (&http.Client{Transport: r.transport()}).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		return "", "", usererr.Wrap(err, "fetch feature %q: %v", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", usererr.New("fetch feature %q: %s", id, resp.Status)
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
		return "", "", usererr.Wrap(err, "fetch feature %q: %v", id, err)
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

// fetchLocal hashes a feature directory in the repository and copies it into
// the cache, so later edits of the checkout do not change what is installed.
func (r *Resolver) fetchLocal(ctx context.Context, id, configDir string) (digest, dir string, err error) {
	root := r.RootDir
	if root == "" {
		root = configDir
	}
	rootReal, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", "", fmt.Errorf("repository dir: %w", err)
	}
	src := filepath.Join(configDir, filepath.FromSlash(id))
	real, err := filepath.EvalSymlinks(src)
	if err != nil {
		return "", "", usererr.New("local feature %q not found next to devcontainer.json", id)
	}
	if rel, err := filepath.Rel(rootReal, real); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", "", usererr.New("local feature %q is outside the repository", id)
	}
	if fi, err := os.Stat(real); err != nil || !fi.IsDir() {
		return "", "", usererr.New("local feature %q is not a directory", id)
	}
	if digest, err = dirDigest(ctx, real); err != nil {
		return "", "", fmt.Errorf("hash local feature %s: %w", id, err)
	}
	if dir, ok := r.cached(digest); ok {
		return digest, dir, nil
	}
	tmp, err := r.tempDir()
	if err != nil {
		return "", "", err
	}
	if err := copyTree(ctx, real, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", "", fmt.Errorf("copy local feature %s: %w", id, err)
	}
	dir, err = r.commit(tmp, digest)
	return digest, dir, err
}
