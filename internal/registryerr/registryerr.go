// Package registryerr turns a failure to fetch something a user named — an
// image from a registry, a dev container feature from a registry or a
// tarball URL — into an error a user can act on, with a category
// (internal/errdefs) that says whether trying again may help. The image
// store and the feature resolver share it, so both say the same thing about
// the same failure.
//
// It never repeats what the server sent (a response body, a registry's
// error message or detail, a redirect's location): a registry, or whatever
// answers at its address, may be hostile, and its words would reach users'
// terminals. Messages name the status code, the registry's error codes
// (from a fixed list), and the root cause of a network failure (the dial or
// DNS error, which holds only what the user and this host wrote).
//
// Categories:
//
//   - Unavailable (retried): connection refused or reset, timeouts, DNS
//     failures, unreachable networks and hosts, a connection closed before
//     the answer, a download cut short, HTTP 5xx, 408 and 429, the registry
//     codes TOOMANYREQUESTS and UNAVAILABLE;
//   - PermissionDenied: HTTP 401 and 403, the codes UNAUTHORIZED and DENIED,
//     and the fetch policy's refusals (a private address, plain HTTP, a
//     redirect), which carry the category themselves (internal/hostfetch);
//   - NotFound: HTTP 404 and 410, MANIFEST_UNKNOWN, NAME_UNKNOWN,
//     BLOB_UNKNOWN;
//   - InvalidArgument: HTTP 400 and the codes NAME_INVALID, TAG_INVALID,
//     MANIFEST_INVALID, DIGEST_INVALID, SIZE_INVALID, MANIFEST_UNVERIFIED,
//     UNSUPPORTED;
//   - FailedPrecondition: a TLS certificate the runner does not trust, a
//     server that does not speak TLS, any other status (the operator or the
//     server must change first);
//   - DeadlineExceeded: the caller's deadline passed; Canceled: the caller
//     cancelled (not shown to users).
package registryerr

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/hostfetch"
	"github.com/covedev/cove/internal/usererr"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Subject is what was being fetched, for messages.
type Subject struct {
	// Kind is what the user named: "image", "feature".
	Kind string
	// Ref is the reference or URL as the user wrote it.
	Ref string
	// Host is the server's host[:port].
	Host string
	// Prefix starts every message (`fetch feature "x": `); may be empty.
	Prefix string
	// Server names the server in messages; "registry <Host>" if empty.
	Server string
}

func (s Subject) server() string {
	if s.Server != "" {
		return s.Server
	}
	return "registry " + s.Host
}

// Error explains err, a failed request to the subject's server (through
// go-containerregistry or a hostfetch client), as a user-visible error with
// a category. An error that is not about the exchange with the server (a
// full disk, a bug) is returned with context, neither visible nor
// categorised, as is a cancellation.
func (s Subject) Error(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s %s: %w", s.Kind, s.Ref, err)
	case errors.Is(err, context.DeadlineExceeded):
		return usererr.Wrap(errdefs.DeadlineExceeded(err), "%s%s: timed out", s.Prefix, s.server())
	}
	if msg, ok := hostfetch.Explain(err); ok {
		return usererr.Wrap(errdefs.PermissionDenied(err), "%s%s: %s", s.Prefix, s.server(), msg)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return s.registry(err, te)
	}
	// The network before TLS: for a registry listed as insecure,
	// go-containerregistry tries https and http, and reports both; the
	// https attempt's TLS error is then noise.
	if IsNetwork(err) {
		return usererr.Wrap(errdefs.Unavailable(err), "%s%s unreachable: %s", s.Prefix, s.server(), RootCause(err))
	}
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return usererr.Wrap(errdefs.FailedPrecondition(err), "%s%s: its TLS certificate is not trusted by this runner", s.Prefix, s.server())
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) || errors.Is(err, http.ErrSchemeMismatch) {
		return usererr.Wrap(errdefs.FailedPrecondition(err), "%s%s does not speak TLS (for a plain-HTTP server, the runner's operator can list it with --insecure-registry)", s.Prefix, s.server())
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return usererr.Wrap(errdefs.Unavailable(err), "%sdownload of %s %q from %s was interrupted, try again", s.Prefix, s.Kind, s.Ref, s.Host)
	}
	return fmt.Errorf("%s %s: %w", s.Kind, s.Ref, err)
}

// Status explains a plain HTTP response that was not 200 OK (a feature
// tarball's server): its status code only.
func (s Subject) Status(code int) error {
	err := fmt.Errorf("HTTP %d", code)
	return usererr.Wrap(errdefs.WithCategory(err, StatusCategory(code)), "%s%s failed: HTTP %s", s.Prefix, s.server(), StatusText(code))
}

// registry explains a registry's error response.
func (s Subject) registry(err error, te *transport.Error) error {
	cat := StatusCategory(te.StatusCode)
	for _, d := range te.Errors {
		if c, ok := codeCategory[d.Code]; ok {
			cat = c
			break
		}
	}
	switch cat {
	case errdefs.CategoryNotFound:
		return usererr.Wrap(errdefs.NotFound(err), "%s%s %q not found", s.Prefix, s.Kind, s.Ref)
	case errdefs.CategoryPermissionDenied:
		return usererr.Wrap(errdefs.PermissionDenied(err), "%saccess to %s %q denied: unauthorized (only public %ss are supported)", s.Prefix, s.Kind, s.Ref, s.Kind)
	}
	return usererr.Wrap(errdefs.WithCategory(err, cat), "%s%s failed: %s", s.Prefix, s.server(), StatusSummary(te))
}

// codeCategory are the registry error codes that decide a category.
var codeCategory = map[transport.ErrorCode]errdefs.Category{
	transport.ManifestUnknownErrorCode:    errdefs.CategoryNotFound,
	transport.NameUnknownErrorCode:        errdefs.CategoryNotFound,
	transport.BlobUnknownErrorCode:        errdefs.CategoryNotFound,
	transport.UnauthorizedErrorCode:       errdefs.CategoryPermissionDenied,
	transport.DeniedErrorCode:             errdefs.CategoryPermissionDenied,
	transport.NameInvalidErrorCode:        errdefs.CategoryInvalidArgument,
	transport.TagInvalidErrorCode:         errdefs.CategoryInvalidArgument,
	transport.ManifestInvalidErrorCode:    errdefs.CategoryInvalidArgument,
	transport.DigestInvalidErrorCode:      errdefs.CategoryInvalidArgument,
	transport.SizeInvalidErrorCode:        errdefs.CategoryInvalidArgument,
	transport.ManifestUnverifiedErrorCode: errdefs.CategoryInvalidArgument,
	transport.UnsupportedErrorCode:        errdefs.CategoryInvalidArgument,
	transport.TooManyRequestsErrorCode:    errdefs.CategoryUnavailable,
	transport.UnavailableErrorCode:        errdefs.CategoryUnavailable,
}

// StatusCategory is the category of an HTTP status code that is an error.
func StatusCategory(code int) errdefs.Category {
	switch {
	case code == http.StatusNotFound, code == http.StatusGone:
		return errdefs.CategoryNotFound
	case code == http.StatusUnauthorized, code == http.StatusForbidden:
		return errdefs.CategoryPermissionDenied
	case code == http.StatusBadRequest:
		return errdefs.CategoryInvalidArgument
	case code == http.StatusTooManyRequests, code == http.StatusRequestTimeout, code >= 500 && code <= 599:
		return errdefs.CategoryUnavailable
	}
	return errdefs.CategoryFailedPrecondition
}

// StatusText is "404 Not Found": the code and Go's name for it, never the
// server's reason phrase.
func StatusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return fmt.Sprintf("%d %s", code, t)
	}
	return fmt.Sprint(code)
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
	s := "HTTP " + StatusText(te.StatusCode)
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

// IsFetch reports whether err came from the exchange with a server (the
// network, the server's answer or the fetch policy) rather than from what
// was done with the bytes: a layer's unpack uses it to tell a dropped
// connection from a bad layer.
func IsFetch(err error) bool {
	var te *transport.Error
	_, policy := hostfetch.Explain(err)
	return policy || errors.As(err, &te) || IsNetwork(err)
}

// netErrnos are the system errors of a network that is not there.
var netErrnos = []syscall.Errno{
	syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.ETIMEDOUT,
	syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.EHOSTDOWN, syscall.ENETDOWN, syscall.EPIPE,
}

// IsNetwork reports whether err is a network failure: a dial, DNS or
// connection error, a timeout, or a connection the server closed before
// answering. A TLS handshake failure is not one.
func IsNetwork(err error) bool {
	var oe *net.OpError
	var de *net.DNSError
	if errors.As(err, &oe) || errors.As(err, &de) {
		return true
	}
	for _, e := range netErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var ue *url.Error
	return errors.As(err, &ue) && errors.Is(err, io.EOF)
}

// RootCause is the innermost network error's text, which is what a user
// needs ("dial tcp 203.0.113.7:443: connect: connection refused", "lookup
// r.example on 10.0.0.53:53: no such host") and holds nothing a server
// sent; "network error" when there is none to name.
func RootCause(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) {
		return de.Error()
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Error()
	}
	for _, e := range netErrnos {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	if errors.Is(err, io.EOF) {
		return "the server closed the connection"
	}
	return "network error"
}
