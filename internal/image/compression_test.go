//go:build linux

package image

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestPullCompressions(t *testing.T) {
	requireRoot(t)
	reg := newRegistry(t)
	zb := tarBytes(t, entry{name: "z", body: "zstd"})
	zl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(zb)), nil
	}, tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	if err != nil {
		t.Fatal(err)
	}
	pl := static.NewLayer(tarBytes(t, entry{name: "p", body: "plain"}), types.OCIUncompressedLayer)
	ref := reg.push(t, "test/comp:v1", buildImage(t, v1.Config{}, layer(t, entry{name: "g", body: "gzip"}), zl, pl))
	s, _ := newTestStore(t)
	img, err := s.Pull(ctxT(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range map[int]string{0: "g", 1: "z", 2: "p"} {
		if _, err := os.Stat(filepath.Join(img.Layers[i], want)); err != nil {
			t.Errorf("layer %d: %v", i, err)
		}
	}
	if got := readFile(t, filepath.Join(img.Layers[1], "z")); got != "zstd" {
		t.Errorf("zstd layer file = %q", got)
	}
}
