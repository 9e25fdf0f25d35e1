package backuprepo

import (
	"context"
	"fmt"
	"io"
	"sync"

	chunkers "github.com/PlakarKorp/go-cdc-chunkers"
	_ "github.com/PlakarKorp/go-cdc-chunkers/chunkers/fastcdc" // registers fastcdc-v1.0.0
)

// Chunk sizes of the content-defined chunker (FastCDC). A file smaller
// than MinChunkSize is one chunk; a larger one is cut where its content
// says, so an insertion moves only the boundaries near it.
//
// Why these: an object store charges per request and per object, and a
// HEAD (the dedup check) costs a round trip, so chunks must not be tiny;
// a 1 MiB average keeps a 10 GiB home to ~10,000 objects. Source trees are
// mostly files far below 256 KiB (Go 1.26's src/: 99.4% of 11,478 files,
// 65% of the bytes), one chunk each whatever the average, so a smaller
// average would not dedup them better; it helps only inside big
// files that change in place (databases, images), where 1 MiB granularity
// is the usual trade-off (restic and borg use 1–2 MiB). 4 MiB bounds the
// memory a chunk takes while it is compressed, sealed and read back.
const (
	MinChunkSize    = 256 << 10
	AvgChunkSize    = 1 << 20
	MaxChunkSize    = 4 << 20
	chunkerAlgoName = "fastcdc-v1.0.0"
)

// One scan buffer per concurrent Split, reused: the chunker peeks at most
// MaxChunkSize bytes, and twice that lets it refill in large strides.
var scanBuffers = sync.Pool{New: func() any { b := make([]byte, 2*MaxChunkSize); return &b }}

// Split cuts the content of r into chunks and calls fn with each in order
// (never with an empty one; nothing for empty content). The slice passed
// to fn is valid only until fn returns. Memory stays bounded (one scan
// buffer of 2×MaxChunkSize) whatever r's size. Boundaries depend on the
// content and on the key only.
func (k *Key) Split(ctx context.Context, r io.Reader, fn func(chunk []byte) error) error {
	bufp := scanBuffers.Get().(*[]byte)
	defer scanBuffers.Put(bufp)
	c, err := chunkers.NewChunkerBuffer(chunkerAlgoName, r, &chunkers.ChunkerOpts{
		MinSize: MinChunkSize, NormalSize: AvgChunkSize, MaxSize: MaxChunkSize, Key: k.gear[:],
	}, *bufp)
	if err != nil {
		return fmt.Errorf("chunker: %w", err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk, err := c.Next()
		if err != nil && err != io.EOF {
			return err
		}
		if len(chunk) > 0 {
			if ferr := fn(chunk); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}
