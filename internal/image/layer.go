package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"
)

// layerSource opens a layer's blob (compressed or not, see UnpackLayer);
// src names it in logs (a blob digest or "import").
type layerSource struct {
	src  string
	open func(ctx context.Context) (io.ReadCloser, error)
}

// remoteLayer is the layerSource of blob, downloaded through p.
func remoteLayer(p *remote.Puller, blob name.Digest) layerSource {
	return layerSource{src: blob.DigestStr(), open: func(ctx context.Context) (io.ReadCloser, error) {
		l, err := p.Layer(ctx, blob)
		if err != nil {
			return nil, err
		}
		// Decompressed by the unpacker (gzip, zstd or plain, detected
		// from the stream); the digest is checked when it is read to
		// its end.
		return l.Compressed()
	}}
}

// localLayer is the layerSource of a layer of an image that is already local
// (see Import).
func localLayer(l v1.Layer) layerSource {
	return layerSource{src: "import", open: func(context.Context) (io.ReadCloser, error) {
		return l.Uncompressed()
	}}
}

// ensureLayer makes sure the layer with diffID is unpacked in the store,
// reading it from ls if not. Each diffID is unpacked by one goroutine at a
// time, whichever image (pulled or imported) asks for it.
func (s *Store) ensureLayer(ctx context.Context, ls layerSource, diffID v1.Hash) error {
	if diffID.Algorithm != "sha256" || len(diffID.Hex) != 64 {
		return fmt.Errorf("layer %s: unsupported diff id", diffID)
	}
	dir := s.layerDir(diffID)
	if _, err := os.Lstat(dir); err == nil {
		return nil
	}
	for {
		_, err, _ := s.layers.Do(diffID.String(), func() (any, error) {
			if _, err := os.Lstat(dir); err == nil {
				return nil, nil // finished by a flight that just ended
			}
			return nil, s.unpackLayer(ctx, ls, diffID, dir)
		})
		// The pull that ran the flight was cancelled, but not ours: retry.
		if errors.Is(err, context.Canceled) && ctx.Err() == nil {
			continue
		}
		return err
	}
}

func (s *Store) unpackLayer(ctx context.Context, ls layerSource, diffID v1.Hash, dir string) error {
	start := time.Now()
	rc, err := ls.open(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()

	tmp, err := s.tmpDir("layer-")
	if err != nil {
		return fmt.Errorf("layer %s: %w", diffID, err)
	}
	committed := false
	defer func() {
		if !committed {
			os.RemoveAll(tmp)
		}
	}()

	unpackLayer := s.unpacker
	if unpackLayer == nil {
		unpackLayer = UnpackLayer
	}
	got, err := unpackLayer(ctx, tmp, rc)
	if err != nil {
		return fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	if got != diffID {
		return fmt.Errorf("layer %s: content has diff id %s", diffID, got)
	}
	if err := syncDir(tmp); err != nil {
		return fmt.Errorf("layer %s: sync: %w", diffID, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if errors.Is(err, fs.ErrExist) || errors.Is(err, unix.ENOTEMPTY) {
			return nil // another process won; its copy is equivalent
		}
		return fmt.Errorf("layer %s: commit: %w", diffID, err)
	}
	committed = true
	s.log.Debug("unpacked layer", "diffid", diffID.String(), "from", ls.src, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
