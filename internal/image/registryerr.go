package image

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/covedev/cove/internal/hostfetch"
	"github.com/covedev/cove/internal/usererr"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// registryError turns an error talking to a registry into one a user can
// act on. It never repeats what the registry sent (a response body, an
// error message or detail): a registry, or whatever answers at its address,
// may be hostile, and its words would reach users' terminals. It says the
// status code and the registry's error codes, which are from a fixed list.
func registryError(ref, host string, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	if msg, ok := hostfetch.Explain(err); ok {
		return usererr.Wrap(err, "registry %s: %s", host, msg)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		for _, d := range te.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return usererr.Wrap(err, "image %q not found", ref)
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return usererr.Wrap(err, "access to image %q denied: unauthorized (only public images are supported)", ref)
			}
		}
		switch te.StatusCode {
		case 404:
			return usererr.Wrap(err, "image %q not found", ref)
		case 401, 403:
			return usererr.Wrap(err, "access to image %q denied: unauthorized (only public images are supported)", ref)
		}
		return usererr.Wrap(err, "registry %s failed: %s", host, StatusSummary(te))
	}
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return usererr.Wrap(err, "registry %s: its TLS certificate is not trusted by this runner", host)
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return usererr.Wrap(err, "registry %s does not speak TLS (for a plain-HTTP registry, the runner's operator can list it with --insecure-registry)", host)
	}
	if isNetworkError(err) {
		return usererr.Wrap(err, "registry %s unreachable: %v", host, rootCause(err))
	}
	return fmt.Errorf("pull %s: %w", ref, err)
}

// knownCodes are the registry error codes a message may name.
var knownCodes = map[transport.ErrorCode]bool{
	transport.BlobUnknownErrorCode: true, transport.BlobUploadInvalidErrorCode: true,
	transport.BlobUploadUnknownErrorCode: true, transport.DigestInvalidErrorCode: true,
	transport.ManifestBlobUnknownErrorCode: true, transport.ManifestInvalidErrorCode: true,
	transport.ManifestUnknownErrorCode: true, transport.ManifestUnverifiedErrorCode: true,
	transport.NameInvalidErrorCode: true, transport.NameUnknownErrorCode: true,
	transport.SizeInvalidErrorCode: true, transport.TagInvalidErrorCode: true,
	transport.UnauthorizedErrorCode: true, transport.DeniedErrorCode: true,
	transport.UnsupportedErrorCode: true, transport.TooManyRequestsErrorCode: true,
	transport.UnknownErrorCode: true, transport.UnavailableErrorCode: true,
}

// StatusSummary describes a registry's error response by its status code
// and known error codes only ("HTTP 429 Too Many Requests (TOOMANYREQUESTS)").
func StatusSummary(te *transport.Error) string {
	s := fmt.Sprintf("HTTP %d", te.StatusCode)
	if t := http.StatusText(te.StatusCode); t != "" {
		s += " " + t
	}
	var codes []string
	for _, d := range te.Errors {
		if knownCodes[d.Code] && !strings.Contains(strings.Join(codes, ","), string(d.Code)) {
			codes = append(codes, string(d.Code))
		}
	}
	if len(codes) > 0 {
		s += " (" + strings.Join(codes, ", ") + ")"
	}
	return s
}

func isTransportError(err error) bool {
	var te *transport.Error
	return errors.As(err, &te)
}

func isPolicyError(err error) bool {
	_, ok := hostfetch.Explain(err)
	return ok
}

func isNetworkError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	var de *net.DNSError
	return errors.As(err, &oe) || errors.As(err, &de) || errors.As(err, &ne) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

// rootCause returns the innermost network error's text, which is what a user
// needs ("dial tcp 203.0.113.7:443: connect: connection refused").
func rootCause(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return de
	}
	return err
}
