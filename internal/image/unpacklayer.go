package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Unpacker unpacks a layer's blob (gzip, zstd or a plain tar) into dir,
// which exists and is empty, and returns the layer's diff id. The store
// unpacks in its own process unless given another (SetUnpacker): the
// runner unpacks in a child process in a limited cgroup of its own, so
// that decompressing and writing a large image does not take the CPU and
// disk from the environments.
type Unpacker func(ctx context.Context, dir string, blob io.Reader) (v1.Hash, error)

// SetUnpacker makes the store unpack layers with u (nil: in this process).
// Call it before the first Pull or Import.
func (s *Store) SetUnpacker(u Unpacker) { s.unpacker = u }

// maxZstdWindow bounds the memory a zstd stream may ask its decoder for:
// the library's own default (zstd --long uses 128 MiB windows; a frame
// written in one segment has its whole size as window). The runner's
// unpacker runs in a memory-limited cgroup besides.
const maxZstdWindow = 512 << 20

// maxTrailing bounds what may follow a layer's tar end marker: tar
// writers pad to a record (10 KiB by default); gigabytes of zeros there
// would cost CPU to decompress and hash for nothing.
const maxTrailing = 1 << 20

// UnpackLayer reads a layer's blob from blob — gzip, zstd or an
// uncompressed tar, told apart by their first bytes — unpacks the tar
// into dir (see unpack) and returns the diff id: the sha256 of the whole
// uncompressed stream, what follows the tar's end marker included. It
// reads blob to its end, so a reader that checks a digest at the end has
// checked it when UnpackLayer returns without error.
func UnpackLayer(ctx context.Context, dir string, blob io.Reader) (v1.Hash, error) {
	br := bufio.NewReaderSize(blob, 64<<10)
	magic, _ := br.Peek(4)
	var r io.Reader = br
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		r = zr
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return v1.Hash{}, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		r = zstdErrors{zr}
	}
	h := sha256.New()
	tr := io.TeeReader(r, h)
	if err := unpack(ctx, dir, tr); err != nil {
		return v1.Hash{}, err
	}
	// Hash what follows the tar end marker too: the diff id covers it
	// all; then read the blob to its end.
	n, err := io.Copy(io.Discard, io.LimitReader(tr, maxTrailing+1))
	if err != nil {
		return v1.Hash{}, err
	}
	if n > maxTrailing {
		return v1.Hash{}, fmt.Errorf("more than %d MiB of data after the layer's tar end marker", maxTrailing>>20)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return v1.Hash{}, err
	}
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}, nil
}

// zstdErrors says which limit a zstd stream hit.
type zstdErrors struct{ r io.Reader }

func (z zstdErrors) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		err = fmt.Errorf("zstd layer needs a window above %d MiB (a frame written in one segment needs its whole size): %w", maxZstdWindow>>20, err)
	}
	return n, err
}
