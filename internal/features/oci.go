package features

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/covedev/cove/internal/hostfetch"
	"github.com/covedev/cove/internal/usererr"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// LayerMediaType is the media type of the layer holding a feature's files in
// an OCI feature artifact.
const LayerMediaType = "application/vnd.devcontainers.layer.v1+tar"

// fetchOCI resolves id to its manifest digest and, unless that digest is
// cached, downloads and unpacks the feature layer.
func (r *Resolver) fetchOCI(ctx context.Context, id string) (digest, dir string, err error) {
	policy := r.fetchPolicy()
	ref, err := parseOCI(id, policy)
	if err != nil {
		return "", "", err
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(authn.Anonymous),
		remote.WithTransport(policy.Transport()),
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return "", "", registryError(id, err)
	}
	digest = desc.Digest.String()
	if dir, ok := r.cached(digest); ok {
		return digest, dir, nil
	}
	m, err := v1.ParseManifest(strings.NewReader(string(desc.Manifest)))
	if err != nil || desc.MediaType.IsIndex() {
		return "", "", usererr.New("feature %q is not a dev container feature (manifest type %s)", id, desc.MediaType)
	}
	var layer *v1.Descriptor
	for i, l := range m.Layers {
		if string(l.MediaType) == LayerMediaType {
			layer = &m.Layers[i]
			break
		}
	}
	if layer == nil {
		return "", "", usererr.New("feature %q is not a dev container feature (no %s layer)", id, LayerMediaType)
	}
	l, err := remote.Layer(ref.Context().Digest(layer.Digest.String()), opts...)
	if err != nil {
		return "", "", registryError(id, err)
	}
	rc, err := l.Compressed() // the blob as stored: a tar, verified against its digest
	if err != nil {
		return "", "", registryError(id, err)
	}
	defer rc.Close()
	tmp, err := r.tempDir()
	if err != nil {
		return "", "", err
	}
	if err := untar(ctx, rc, tmp); err != nil {
		os.RemoveAll(tmp)
		if isNetworkError(err) || isPolicyError(err) {
			return "", "", registryError(id, err)
		}
		return "", "", usererr.Wrap(err, "feature %q: bad layer: %v", id, err)
	}
	dir, err = r.commit(tmp, digest)
	return digest, dir, err
}

// registryError turns a registry failure into one a user can act on. It
// never repeats what the registry sent (bodies, error messages): only status
// codes.
func registryError(id string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("fetch feature %s: %w", id, err)
	}
	if msg, ok := hostfetch.Explain(err); ok {
		return usererr.Wrap(err, "fetch feature %q: %s", id, msg)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case 404:
			return usererr.Wrap(err, "feature %q not found", id)
		case 401, 403:
			return usererr.Wrap(err, "access to feature %q denied (only public features are supported)", id)
		}
		for _, d := range te.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return usererr.Wrap(err, "feature %q not found", id)
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return usererr.Wrap(err, "access to feature %q denied (only public features are supported)", id)
			}
		}
		return usererr.Wrap(err, "fetch feature %q: registry error %s", id, statusText(te.StatusCode))
	}
	if msg, ok := tlsProblem(err); ok {
		return usererr.Wrap(err, "fetch feature %q: %s", id, msg)
	}
	if isNetworkError(err) {
		return usererr.Wrap(err, "fetch feature %q: registry unreachable: %v", id, rootCause(err))
	}
	return fmt.Errorf("fetch feature %s: %w", id, err)
}

func isPolicyError(err error) bool {
	_, ok := hostfetch.Explain(err)
	return ok
}

func isNetworkError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EHOSTUNREACH)
}
