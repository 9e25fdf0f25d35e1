package image

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

// TestPullRefusesTamperedBlob: a registry that serves a layer whose bytes
// do not match the digest the manifest names gets the pull refused, and
// nothing of the layer is kept.
func TestPullRefusesTamperedBlob(t *testing.T) {
	requireRoot(t)
	reg := newRegistry(t)
	l := layer(t, entry{name: "f", body: "genuine"})
	ref := reg.push(t, "test/tampered:v1", buildImage(t, v1.Config{}, l))
	reg.mu.Lock()
	reg.tamper[digestOf(t, l).String()] = true
	reg.mu.Unlock()
	s, root := newTestStore(t)
	if _, err := s.Pull(ctxT(t), ref); err == nil {
		t.Fatal("tampered layer pulled")
	}
	diff, err := l.DiffID()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(s.layerDir(diff)); !os.IsNotExist(err) {
		t.Fatalf("layer directory of a refused blob: %v", err)
	}
	left, _ := os.ReadDir(filepath.Join(root, "tmp"))
	if len(left) > 0 {
		t.Fatalf("left in tmp: %v", left)
	}
}

// TestStoreUsesItsUnpacker: layers go through the store's unpacker, whose
// diff id is checked against the image's.
func TestStoreUsesItsUnpacker(t *testing.T) {
	requireRoot(t)
	reg := newRegistry(t)
	ref := reg.push(t, "test/unpacker:v1", buildImage(t, v1.Config{}, layer(t, entry{name: "a", body: "A"})))

	var calls atomic.Int32
	s, _ := newTestStore(t)
	s.SetUnpacker(func(ctx context.Context, dir string, blob io.Reader) (v1.Hash, error) {
		calls.Add(1)
		return UnpackLayer(ctx, dir, blob)
	})
	img, err := s.Pull(ctxT(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 || readFile(t, filepath.Join(img.Layers[0], "a")) != "A" {
		t.Fatalf("unpacker called %d times", calls.Load())
	}

	// An unpacker that reports another diff id (a child that unpacked
	// something else) gets the layer refused.
	ref2 := reg.push(t, "test/unpacker:v2", buildImage(t, v1.Config{}, layer(t, entry{name: "b", body: "B"})))
	s2, _ := newTestStore(t)
	s2.SetUnpacker(func(ctx context.Context, dir string, blob io.Reader) (v1.Hash, error) {
		if _, err := UnpackLayer(ctx, dir, blob); err != nil {
			return v1.Hash{}, err
		}
		return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}, nil
	})
	if _, err := s2.Pull(ctxT(t), ref2); err == nil || !strings.Contains(err.Error(), "content has diff id") {
		t.Fatalf("pull with a wrong diff id: %v", err)
	}
}

// TestTrailingDataBounded: a blob whose tar is followed by a mass of
// zeros (a few KB compressed; gigabytes would do as well) is refused after a bounded amount
// of work, not decompressed and hashed to its end.
func TestTrailingDataBounded(t *testing.T) {
	requireRoot(t)
	tb := tarBytes(t, entry{name: "f", body: "x"})
	var blob bytes.Buffer
	zw, err := zstd.NewWriter(&blob, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(tb); err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 1<<20)
	for range 2 << 10 { // 2 GiB of zeros after the end marker
		if _, err := zw.Write(zeros); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	r := &countingReader{r: bytes.NewReader(blob.Bytes())}
	_, err = UnpackLayer(ctxT(t), t.TempDir(), r)
	if err == nil || !strings.Contains(err.Error(), "after the layer's tar end marker") {
		t.Fatalf("UnpackLayer: %v", err)
	}
	if r.n > int64(blob.Len())/2 {
		t.Errorf("read %d of the blob's %d bytes before refusing it", r.n, blob.Len())
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
