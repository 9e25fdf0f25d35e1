package build

import (
	"errors"
	"strings"

	gatewaypb "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/util/grpcerrors"
	"google.golang.org/grpc/codes"

	"github.com/covedev/cove/internal/errdefs"
)

// solveCategory says what kind of failure a failed solve is, for a retry
// loop's decision:
//
//   - a step of the Dockerfile that exited non-zero, a Dockerfile that does
//     not parse, a COPY of a missing file: InvalidArgument (the repository
//     must change; retrying builds the same failure);
//   - buildkitd gone mid-build: Unavailable;
//   - a base image (FROM) that cannot be fetched: by what BuildKit says of
//     the fetch (unreachable or 5xx: Unavailable; unauthorized:
//     PermissionDenied; not found: NotFound);
//   - a full disk: ResourceExhausted.
//
// A failed RUN step is decided by its exit alone: its command line and
// output are the Dockerfile's words, which could say anything.
func solveCategory(err error) errdefs.Category {
	var exit *gatewaypb.ExitError
	if errors.As(err, &exit) {
		return errdefs.CategoryInvalidArgument
	}
	switch grpcerrors.Code(err) {
	case codes.Unavailable:
		return errdefs.CategoryUnavailable
	case codes.ResourceExhausted:
		return errdefs.CategoryResourceExhausted
	}
	msg := strings.ToLower(err.Error())
	if strings.Contains(msg, "no space left on device") {
		return errdefs.CategoryResourceExhausted
	}
	// Fetching a base image or a cache: BuildKit's and containerd's words.
	if strings.Contains(msg, "failed to resolve source metadata") || strings.Contains(msg, "failed to do request") ||
		strings.Contains(msg, "failed to fetch") || strings.Contains(msg, "failed to copy") {
		for _, p := range []struct {
			substr string
			cat    errdefs.Category
		}{
			{"401 unauthorized", errdefs.CategoryPermissionDenied},
			{"403 forbidden", errdefs.CategoryPermissionDenied},
			{"pull access denied", errdefs.CategoryPermissionDenied},
			{"insufficient_scope", errdefs.CategoryPermissionDenied},
			{"connection refused", errdefs.CategoryUnavailable},
			{"connection reset", errdefs.CategoryUnavailable},
			{"i/o timeout", errdefs.CategoryUnavailable},
			{"no such host", errdefs.CategoryUnavailable},
			{"server misbehaving", errdefs.CategoryUnavailable},
			{"network is unreachable", errdefs.CategoryUnavailable},
			{"no route to host", errdefs.CategoryUnavailable},
			{"tls handshake timeout", errdefs.CategoryUnavailable},
			{"unexpected eof", errdefs.CategoryUnavailable},
			{"429 too many requests", errdefs.CategoryUnavailable},
			{"toomanyrequests", errdefs.CategoryUnavailable},
			{"500 internal server error", errdefs.CategoryUnavailable},
			{"502 bad gateway", errdefs.CategoryUnavailable},
			{"503 service unavailable", errdefs.CategoryUnavailable},
			{"504 gateway timeout", errdefs.CategoryUnavailable},
			{": not found", errdefs.CategoryNotFound},
		} {
			if strings.Contains(msg, p.substr) {
				return p.cat
			}
		}
	}
	return errdefs.CategoryInvalidArgument
}
