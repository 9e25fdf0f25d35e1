package s3blob

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// AbortStale aborts the multipart uploads under the store's prefix that
// started more than olderThan ago, and returns how many it aborted. A Put
// aborts its own upload when it fails, but not when the server or this
// process is gone at that moment: the parts then stay in the bucket,
// invisible and billed. Run it at start-up with an age no Put in progress
// can reach (a day), or give the bucket a lifecycle rule
// (AbortIncompleteMultipartUpload) instead.
func (s *Store) AbortStale(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	in := &s3.ListMultipartUploadsInput{Bucket: &s.cfg.Bucket, Prefix: aws.String(s.cfg.Prefix)}
	aborted := 0
	for {
		out, err := s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return aborted, s.classify(err, "list uploads", "")
		}
		for _, u := range out.Uploads {
			if u.Initiated != nil && u.Initiated.After(cutoff) {
				continue
			}
			_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.cfg.Bucket, Key: u.Key, UploadId: u.UploadId})
			if err != nil {
				return aborted, s.classify(err, "abort upload", aws.ToString(u.Key))
			}
			s.log.Info("blob: aborted a stale multipart upload", "key", aws.ToString(u.Key), "initiated", aws.ToTime(u.Initiated))
			aborted++
		}
		if !aws.ToBool(out.IsTruncated) {
			return aborted, nil
		}
		if out.NextKeyMarker == nil && out.NextUploadIdMarker == nil {
			return aborted, fmt.Errorf("s3 list uploads: truncated listing without a marker")
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}
