package s3blob

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/errdefs"
)

// classify wraps an SDK error with what it means for the operation op on
// key and the category that decides a retry: the S3 error code first, then
// the HTTP status, then the transport. A request the SDK gave up retrying
// keeps the category of its last failure (Unavailable for a server that
// went away).
func (s *Store) classify(err error, op, key string) error {
	if err == nil {
		return nil
	}
	where := fmt.Sprintf("s3 %s %s/%s%s", s.cfg.Endpoint, s.cfg.Bucket, s.cfg.Prefix, key)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("blob %s %q: %w", op, key, err)
	}
	wrap := func(cat errdefs.Category, what string) error {
		return errdefs.WithCategory(fmt.Errorf("blob %s %q: %s (%s): %w", op, key, what, where, err), cat)
	}
	var tries string
	var maxErr *retry.MaxAttemptsError
	if errors.As(err, &maxErr) {
		tries = fmt.Sprintf(", gave up after %d tries", maxErr.Attempt)
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return fmt.Errorf("blob %s %q: %w", op, key, blob.ErrNotFound)
		case "InvalidRange":
			return fmt.Errorf("blob %s %q: %w", op, key, blob.ErrRangeNotSatisfiable)
		case "NoSuchBucket":
			return wrap(errdefs.CategoryFailedPrecondition, fmt.Sprintf("bucket %q does not exist: create it, or fix the bucket name", s.cfg.Bucket))
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AllAccessDisabled":
			return wrap(errdefs.CategoryPermissionDenied, "the storage refused the credentials")
		case "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed", "Throttling", "ThrottlingException":
			return wrap(errdefs.CategoryUnavailable, "the storage is failing or busy"+tries)
		case "QuotaExceeded", "InsufficientStorage", "StorageFull":
			return wrap(errdefs.CategoryResourceExhausted, "the storage is full or over quota")
		}
	}
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) {
		switch code := respErr.HTTPStatusCode(); {
		case code == http.StatusNotFound:
			return fmt.Errorf("blob %s %q: %w", op, key, blob.ErrNotFound)
		case code == http.StatusRequestedRangeNotSatisfiable:
			return fmt.Errorf("blob %s %q: %w", op, key, blob.ErrRangeNotSatisfiable)
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			return wrap(errdefs.CategoryPermissionDenied, "the storage refused the credentials")
		case code == http.StatusTooManyRequests || code >= 500:
			return wrap(errdefs.CategoryUnavailable, fmt.Sprintf("the storage answered %d%s", code, tries))
		case code == http.StatusInsufficientStorage:
			return wrap(errdefs.CategoryResourceExhausted, "the storage is full")
		case code >= 400:
			return wrap(errdefs.CategoryInvalidArgument, fmt.Sprintf("the storage refused the request (%d)", code))
		}
	}
	var sendErr *smithyhttp.RequestSendError
	if errors.As(err, &sendErr) || maxErr != nil {
		return wrap(errdefs.CategoryUnavailable, "cannot reach the storage"+tries)
	}
	// A response body that breaks off, and other transport failures.
	return wrap(errdefs.CategoryUnavailable, "connection to the storage failed")
}
