package features

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/registryerr"
	"github.com/covedev/cove/internal/usererr"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
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
	host := ref.Context().RegistryStr()
	registryError := registryerr.Subject{Kind: "feature", Ref: id, Host: host, Prefix: fmt.Sprintf("fetch feature %q: ", id)}.Error
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return "", "", registryError(err)
	}
	digest = desc.Digest.String()
	if dir, ok := r.cached(digest); ok {
		return digest, dir, nil
	}
	m, err := v1.ParseManifest(strings.NewReader(string(desc.Manifest)))
	if err != nil || desc.MediaType.IsIndex() {
		return "", "", errdefs.InvalidArgument(usererr.New("feature %q is not a dev container feature (manifest type %s)", id, desc.MediaType))
	}
	var layer *v1.Descriptor
	for i, l := range m.Layers {
		if string(l.MediaType) == LayerMediaType {
			layer = &m.Layers[i]
			break
		}
	}
	if layer == nil {
		return "", "", errdefs.InvalidArgument(usererr.New("feature %q is not a dev container feature (no %s layer)", id, LayerMediaType))
	}
	l, err := remote.Layer(ref.Context().Digest(layer.Digest.String()), opts...)
	if err != nil {
		return "", "", registryError(err)
	}
	rc, err := l.Compressed() // the blob as stored: a tar, verified against its digest
	if err != nil {
		return "", "", registryError(err)
	}
	defer rc.Close()
	tmp, err := r.tempDir()
	if err != nil {
		return "", "", err
	}
	if err := untar(ctx, rc, tmp); err != nil {
		os.RemoveAll(tmp)
		if registryerr.IsFetch(err) || errors.Is(err, io.ErrUnexpectedEOF) {
			return "", "", registryError(err)
		}
		return "", "", usererr.Wrap(errdefs.InvalidArgument(err), "feature %q: bad layer: %v", id, err)
	}
	dir, err = r.commit(tmp, digest)
	return digest, dir, err
}
