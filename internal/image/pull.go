package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/hostfetch"
	"github.com/covedev/cove/internal/registryerr"
	"github.com/covedev/cove/internal/usererr"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Pull fetches ref for linux/GOARCH (choosing from an image index if needed)
// and unpacks its layers into the store. Concurrent pulls of one reference
// share one download; layers already in the store are not fetched again.
func (s *Store) Pull(ctx context.Context, ref string) (*Image, error) {
	r, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	img, err := s.pulls.do(ctx, r.Name(), func(ctx context.Context) (*Image, error) {
		return s.pull(ctx, ref, r)
	})
	if err != nil {
		return nil, err
	}
	c := *img // shared with the other callers
	c.Ref = ref
	c.Layers = append([]string(nil), img.Layers...)
	return &c, nil
}

// SetFetchPolicy sets where pulls may connect (nil: hostfetch.Default()).
// Call it before the first Pull.
func (s *Store) SetFetchPolicy(p *hostfetch.Policy) { s.policy = p }

func (s *Store) fetchPolicy() *hostfetch.Policy {
	if s.policy != nil {
		return s.policy
	}
	return hostfetch.Default()
}

func (s *Store) pull(ctx context.Context, ref string, r name.Reference) (*Image, error) {
	host := r.Context().RegistryStr()
	policy := s.fetchPolicy()
	if policy.Insecure(host) {
		// Plain HTTP only to registries the operator listed; the policy's
		// transport refuses it to any other (go-containerregistry would
		// otherwise try it for loopback and RFC 1918 names).
		var err error
		if r, err = name.ParseReference(ref, name.Insecure); err != nil {
			return nil, usererr.Wrap(errdefs.InvalidArgument(err), "invalid image reference %q", ref)
		}
	}
	puller, err := remote.NewPuller(
		remote.WithContext(ctx),
		remote.WithAuth(authn.Anonymous),
		remote.WithTransport(policy.Transport()),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}),
		remote.WithRetryBackoff(remote.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 3}),
	)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	registryError := registryerr.Subject{Kind: "image", Ref: ref, Host: host}.Error
	start := time.Now()
	desc, err := puller.Get(ctx, r)
	if err != nil {
		return nil, registryError(err)
	}
	rimg, err := desc.Image() // resolves an index to the linux/GOARCH image
	if err != nil {
		if strings.Contains(err.Error(), "no child with platform") {
			return nil, usererr.Wrap(errdefs.NotFound(err), "image %q has no linux/%s variant", ref, runtime.GOARCH)
		}
		return nil, registryError(err)
	}
	rawManifest, err := rimg.RawManifest()
	if err != nil {
		return nil, registryError(err)
	}
	mdgst, err := rimg.Digest()
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return nil, usererr.Wrap(errdefs.InvalidArgument(err), "image %q has an invalid manifest", ref)
	}

	rawCfg, err := s.readBlob(m.Config.Digest)
	if errors.Is(err, ErrNotFound) {
		rawCfg, err = s.fetchBlob(ctx, puller, r.Context().Digest(m.Config.Digest.String()))
		if err != nil {
			return nil, registryError(err)
		}
		if err := s.writeBlob(m.Config.Digest, rawCfg); err != nil {
			return nil, fmt.Errorf("pull %s: store config: %w", ref, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		return nil, usererr.Wrap(errdefs.InvalidArgument(err), "image %q has an invalid config", ref)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, errdefs.InvalidArgument(usererr.New("image %q is invalid: %d layers but %d diff ids", ref, len(m.Layers), len(cfg.RootFS.DiffIDs)))
	}

	for i, l := range m.Layers {
		if !isLayerMediaType(l.MediaType) {
			return nil, errdefs.InvalidArgument(usererr.New("image %q: layer %s has unsupported media type %s", ref, l.Digest, l.MediaType))
		}
		blob := r.Context().Digest(l.Digest.String())
		if err := s.ensureLayer(ctx, remoteLayer(puller, blob), cfg.RootFS.DiffIDs[i]); err != nil {
			var ue *usererr.Error
			if errors.As(err, &ue) {
				return nil, err
			}
			if registryerr.IsFetch(err) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, registryError(err)
			}
			if errors.Is(err, errEscape) {
				return nil, usererr.Wrap(errdefs.InvalidArgument(err), "image %q refused: %v", ref, err)
			}
			return nil, fmt.Errorf("pull %s: %w", ref, err)
		}
	}
	if err := s.writeBlob(mdgst, rawManifest); err != nil {
		return nil, fmt.Errorf("pull %s: store manifest: %w", ref, err)
	}
	if err := s.setIndex(r.Name(), mdgst.String()); err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	img, err := s.load(ref, mdgst)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	s.log.Info("pulled image", "ref", ref, "digest", mdgst.String(), "layers", len(img.Layers), "took", time.Since(start).Round(time.Millisecond))
	return img, nil
}

// fetchBlob downloads a small blob (config) and verifies its digest.
func (s *Store) fetchBlob(ctx context.Context, p *remote.Puller, d name.Digest) ([]byte, error) {
	l, err := p.Layer(ctx, d)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed() // raw blob bytes, digest verified on EOF
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, 64<<20))
}

// isLayerMediaType accepts the Docker and OCI layer types (plain, gzip,
// zstd) but not foreign or non-distributable layers, which registries do not
// serve.
func isLayerMediaType(mt types.MediaType) bool {
	switch mt {
	case types.DockerForeignLayer, types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer:
		return false
	}
	return mt.IsLayer()
}

// parseRef parses an image reference (without choosing a scheme: the pull
// does, from the fetch policy).
func parseRef(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, usererr.Wrap(errdefs.InvalidArgument(err), "invalid image reference %q", ref)
	}
	return r, nil
}
