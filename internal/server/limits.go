package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Bounds on every request, so that an unauthenticated client gets bounded
// work: a body is refused by its declared length before anything reads it,
// or cut off at the limit while it is read; it must arrive within a
// deadline; headers are small and must arrive quickly.
const (
	// MaxRequestBytes bounds a request body that carries credentials (and
	// any decoded API message).
	MaxRequestBytes = 4 << 20
	// MaxUnauthenticatedBytes bounds a body sent without credentials:
	// JoinRunner (a join token and a name), the login form.
	MaxUnauthenticatedBytes = 64 << 10
	// DefaultRequestBodyTimeout is how long a client may take to send a
	// request body (responses, such as watch streams, are not bounded).
	DefaultRequestBodyTimeout = 30 * time.Second

	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	maxH2Streams      = 100 // concurrent streams per HTTP/2 connection
)

// NewHTTPServer returns the http.Server for the API handler h: HTTP/1.1,
// HTTP/2 over TLS and unencrypted HTTP/2 with prior knowledge (gRPC), with
// header, idle and size limits. There is deliberately no ReadTimeout or
// WriteTimeout: they would cut long watch streams; the handler bounds
// request bodies itself.
func NewHTTPServer(h http.Handler) *http.Server {
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: maxH2Streams},
		Protocols:         new(http.Protocols),
	}
	hs.Protocols.SetHTTP1(true)
	hs.Protocols.SetHTTP2(true)
	hs.Protocols.SetUnencryptedHTTP2(true)
	return hs
}

// limitRequests bounds every request's body before any handler (or the
// authentication) reads it.
func (s *Server) limitRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := int64(MaxRequestBytes)
		if r.Header.Get("Authorization") == "" {
			limit = MaxUnauthenticatedBytes
		}
		if r.ContentLength > limit {
			writeTooLarge(w, r, limit)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
			// A deadline for the body only: cleared once it is read, so a
			// long response (a watch) is not cut.
			rc := http.NewResponseController(w)
			if rc.SetReadDeadline(time.Now().Add(s.cfg.RequestBodyTimeout)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, w: w, clear: func() { _ = rc.SetReadDeadline(time.Time{}) }}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// writeTooLarge refuses a request by its declared length, as a
// resource_exhausted error in the caller's protocol: a gRPC trailers-only
// response, else HTTP 413 with a Connect (JSON) error body.
func writeTooLarge(w http.ResponseWriter, r *http.Request, limit int64) {
	msg := fmt.Sprintf("request body too large: at most %d bytes", limit)
	w.Header().Set("Connection", "close")
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/grpc") {
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Grpc-Status", "8") // RESOURCE_EXHAUSTED
		w.Header().Set("Grpc-Message", url.PathEscape(msg))
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	_, _ = fmt.Fprintf(w, `{"code":"resource_exhausted","message":%q}`, msg)
}

// deadlineBody clears the request's read deadline when the body ends, and
// closes the connection after the answer if the deadline passed first (the
// rest of that body is never read).
type deadlineBody struct {
	io.ReadCloser
	w     http.ResponseWriter
	once  sync.Once
	clear func()
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case errors.Is(err, io.EOF):
		b.once.Do(b.clear)
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.w.Header().Set("Connection", "close")
	}
	return n, err
}
