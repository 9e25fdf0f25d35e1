package s3blob

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/errdefs"
)

// abortTimeout bounds the abort of a failed multipart upload, which runs
// even when the Put's context is done.
const abortTimeout = 30 * time.Second

// Put implements blob.Store. The first PartSize bytes are read into memory;
// a stream that ends within them is sent in one PutObject, a longer one in
// a multipart upload of PartSize parts. Parts are sent from memory, so the
// SDK can retry them.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := blob.ValidateKey(key); err != nil {
		return err
	}
	if size > s.cfg.PartSize*maxParts {
		return errdefs.InvalidArgument(fmt.Errorf("blob put %q: %d bytes is more than %d parts of %d bytes (raise the part size)", key, size, maxParts, s.cfg.PartSize))
	}
	src := blob.ContextReader(ctx, r)
	if size >= 0 {
		src = io.LimitReader(src, size+1) // one more, to tell a longer stream
	}
	// A part buffer is not pooled: after a failed request the HTTP
	// transport may still be reading its body.
	bufSize := s.cfg.PartSize
	if size >= 0 && size < bufSize {
		bufSize = size + 1 // a small object needs no whole part in memory
	}
	buf := make([]byte, bufSize)
	n, last, err := fill(src, buf)
	if err != nil {
		return s.classify(err, "put", key)
	}
	if size >= 0 && int64(n) > size {
		return blob.SizeMismatch(key, size, int64(n))
	}
	if last {
		if size >= 0 && int64(n) != size {
			return blob.SizeMismatch(key, size, int64(n))
		}
		_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket:        &s.cfg.Bucket,
			Key:           s.objectKey(key),
			Body:          bytes.NewReader(buf[:n]),
			ContentLength: aws.Int64(int64(n)),
		})
		if err != nil {
			return s.classify(err, "put", key)
		}
		return nil
	}
	return s.multipart(ctx, key, src, size, buf)
}

// fill reads into buf until it is full or r ends; last says r ended.
func fill(r io.Reader, buf []byte) (n int, last bool, err error) {
	n, err = io.ReadFull(r, buf)
	switch {
	case err == io.EOF, err == io.ErrUnexpectedEOF:
		return n, true, nil
	case err != nil:
		return n, false, err
	}
	return n, false, nil
}

// multipart uploads buf (a full first part) and the rest of src, and
// completes the upload only if all of it is stored; otherwise it aborts.
func (s *Store) multipart(ctx context.Context, key string, src io.Reader, size int64, buf []byte) (err error) {
	created, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: &s.cfg.Bucket,
		Key:    s.objectKey(key),
	})
	if err != nil {
		return s.classify(err, "put", key)
	}
	id := created.UploadId
	defer func() {
		if err == nil {
			return
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
		defer cancel()
		if _, aerr := s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
			Bucket: &s.cfg.Bucket, Key: s.objectKey(key), UploadId: id,
		}); aerr != nil {
			// The parts stay on the server, invisible, until a bucket
			// lifecycle rule (AbortIncompleteMultipartUpload) or
			// AbortStale removes them.
			s.log.Warn("blob: cannot abort a failed multipart upload", "key", key, "upload", aws.ToString(id), "err", aerr)
		}
	}()
	var parts []types.CompletedPart
	var total int64
	n, ended := len(buf), false
	for num := int32(1); n > 0; num++ {
		if num > maxParts {
			return errdefs.InvalidArgument(fmt.Errorf("blob put %q: more than %d parts of %d bytes (raise the part size)", key, maxParts, s.cfg.PartSize))
		}
		total += int64(n)
		if size >= 0 && total > size {
			return blob.SizeMismatch(key, size, total)
		}
		out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket:        &s.cfg.Bucket,
			Key:           s.objectKey(key),
			UploadId:      id,
			PartNumber:    aws.Int32(num),
			Body:          bytes.NewReader(buf[:n]),
			ContentLength: aws.Int64(int64(n)),
		})
		if err != nil {
			return s.classify(err, "put", key)
		}
		parts = append(parts, types.CompletedPart{
			ETag:              out.ETag,
			PartNumber:        aws.Int32(num),
			ChecksumCRC32:     out.ChecksumCRC32,
			ChecksumCRC32C:    out.ChecksumCRC32C,
			ChecksumCRC64NVME: out.ChecksumCRC64NVME,
			ChecksumSHA1:      out.ChecksumSHA1,
			ChecksumSHA256:    out.ChecksumSHA256,
		})
		if ended {
			break
		}
		if n, ended, err = fill(src, buf); err != nil {
			return s.classify(err, "put", key)
		}
	}
	if size >= 0 && total != size {
		return blob.SizeMismatch(key, size, total)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blob put %q: %w", key, err)
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          &s.cfg.Bucket,
		Key:             s.objectKey(key),
		UploadId:        id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return s.classify(err, "put", key)
	}
	return nil
}
