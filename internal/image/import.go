package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/usererr"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Import stores a v1.Image that did not come from a registry (e.g. a
// Dockerfile build loaded from an OCI layout) under name, unpacking each
// layer once (by diffID, shared with pulled images), and returns it like Pull.
//
// name is a local reference such as "cove-build/<key>:latest"; Get finds the
// image under it afterwards, also from a new Store on the same root.
// Concurrent Imports of one name and image share one unpack.
func (s *Store) Import(ctx context.Context, name string, img v1.Image) (*Image, error) {
	r, err := parseRef(name)
	if err != nil {
		return nil, err
	}
	mdgst, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", name, err)
	}
	// Keyed by image too: an Import of another build under the same name is
	// not answered with this one, and never with a Pull's result.
	key := "import " + r.Name() + "@" + mdgst.String()
	out, err := s.pulls.do(ctx, key, func(ctx context.Context) (*Image, error) {
		return s.importImage(ctx, name, r.Name(), img)
	})
	if err != nil {
		return nil, err
	}
	c := *out // shared with the other callers
	c.Ref = name
	c.Layers = append([]string(nil), out.Layers...)
	return &c, nil
}

func (s *Store) importImage(ctx context.Context, name, indexName string, img v1.Image) (*Image, error) {
	start := time.Now()
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("import %s: manifest: %w", name, err)
	}
	mdgst, _, err := v1.SHA256(bytes.NewReader(rawManifest))
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", name, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return nil, fmt.Errorf("import %s: manifest: %w", name, err)
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("import %s: config: %w", name, err)
	}
	if d, _, err := v1.SHA256(bytes.NewReader(rawCfg)); err != nil || d != m.Config.Digest {
		return nil, fmt.Errorf("import %s: config has digest %s, manifest says %s", name, d, m.Config.Digest)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		return nil, fmt.Errorf("import %s: config: %w", name, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("import %s: layers: %w", name, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(layers) || len(m.Layers) != len(layers) {
		return nil, fmt.Errorf("import %s: %d layers, %d in manifest, %d diff ids", name, len(layers), len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	for i, l := range layers {
		if !isLayerMediaType(m.Layers[i].MediaType) {
			return nil, fmt.Errorf("import %s: layer %s has unsupported media type %s", name, m.Layers[i].Digest, m.Layers[i].MediaType)
		}
		// The unpack checks the stream against the config's diff id.
		if err := s.ensureLayer(ctx, localLayer(l), cfg.RootFS.DiffIDs[i]); err != nil {
			if errors.Is(err, errEscape) {
				return nil, usererr.Wrap(errdefs.InvalidArgument(err), "image %q refused: %v", name, err)
			}
			return nil, fmt.Errorf("import %s: %w", name, err)
		}
	}
	if err := s.writeBlob(m.Config.Digest, rawCfg); err != nil {
		return nil, fmt.Errorf("import %s: store config: %w", name, err)
	}
	if err := s.writeBlob(mdgst, rawManifest); err != nil {
		return nil, fmt.Errorf("import %s: store manifest: %w", name, err)
	}
	if err := s.setIndex(indexName, mdgst.String()); err != nil {
		return nil, fmt.Errorf("import %s: %w", name, err)
	}
	out, err := s.load(name, mdgst)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", name, err)
	}
	s.log.Info("imported image", "name", name, "digest", mdgst.String(), "layers", len(out.Layers), "took", time.Since(start).Round(time.Millisecond))
	return out, nil
}
