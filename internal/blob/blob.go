// Package blob is cove's object storage: a flat namespace of immutable
// objects addressed by key, on a local directory (localblob, the default
// of `cove up`) or on S3-compatible storage (s3blob). Backups store their
// chunks and manifests here.
//
// # What every Store promises
//
//   - Put is atomic: a reader sees the whole previous object, the whole new
//     one, or nothing; never a partial object. A Put that fails or is
//     cancelled leaves no new object behind. Of concurrent Puts to the same
//     key, one wins whole.
//   - Get streams (memory stays bounded whatever the object's size) and
//     reads byte ranges.
//   - List returns every object under a prefix in lexicographic key order,
//     page by page (never the whole listing in memory at once), with size
//     and modification time, which a garbage collector's grace period needs.
//   - Delete is idempotent: deleting a missing key succeeds.
//   - Keys are validated (ValidateKey) before anything touches storage.
//
// There is no PutIfAbsent: backups address chunks by a keyed hash of their
// content, so "Stat, then Put when missing" is enough (two writers of the
// same key write the same bytes), and S3-compatible servers disagree on
// conditional writes.
//
// # Errors
//
// Errors carry an internal/errdefs category that tells a caller whether to
// retry: ErrNotFound (errdefs.NotFound) for a missing object, InvalidArgument
// for a bad key or range, PermissionDenied for refused credentials,
// ResourceExhausted for a full disk or quota, Unavailable for an unreachable
// or failing server (retryable), Canceled/DeadlineExceeded from the context.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"time"

	"github.com/covedev/cove/internal/errdefs"
)

// UnknownSize is the size argument of Put for a stream of unknown length.
const UnknownSize int64 = -1

// Store is an object store. Implementations are safe for concurrent use.
type Store interface {
	// Put stores the content of r under key, replacing any object there.
	// size is the content's length, or UnknownSize; when it is known, a
	// reader that yields a different number of bytes fails the Put
	// (InvalidArgument) and nothing is stored.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Get opens the object (or the part of it that rng selects) for
	// reading. The caller closes the reader. A range starting at or past
	// the object's end is InvalidArgument; one running past it is cut at
	// the end.
	Get(ctx context.Context, key string, rng Range) (io.ReadCloser, error)
	// Stat describes the object, or fails with ErrNotFound.
	Stat(ctx context.Context, key string) (Info, error)
	// List yields every object whose key starts with prefix ("" for all),
	// in lexicographic order. prefix need not end at a "/". Iteration
	// stops at the first error, which is yielded.
	List(ctx context.Context, prefix string) iter.Seq2[Info, error]
	// Delete removes the object; a missing object is not an error.
	Delete(ctx context.Context, key string) error
}

// Syncer is a Store whose Puts are not durable one by one (a local
// directory written without an fsync per object): Sync makes every object
// Put before it durable. A Store without it (S3: a PUT is durable when it
// returns) needs no Sync. Backups call Sync after all chunks are stored
// and before they write the manifest that names them.
type Syncer interface {
	Sync(ctx context.Context) error
}

// CrashState is what a Syncer store that keeps crash markers (localblob
// with BatchedSync) says about the objects of one scope: whether a host
// crash may have damaged some, since when, and from when on they are
// vouched for.
type CrashState struct {
	// Markers are the markers of this machine's earlier boots that may
	// have ended with objects unsynced, to clear once those objects are
	// checked.
	Markers []string
	// Since is the earliest modification time such an object can have.
	Since time.Time
	// Foreign is set when another machine sharing the store may have
	// unsynced objects of the scope (running or crashed: no telling).
	Foreign bool
	// Epoch is when the store began to keep markers for the scope: an
	// object modified before it is not vouched for.
	Epoch time.Time
}

// Quarantined is an object moved aside from its key, open for reading:
// Restore puts it back (unless another object was stored under the key
// meanwhile, which stays), Drop deletes it.
type Quarantined interface {
	io.Reader
	Restore() error
	Drop() error
}

// Sync syncs s if it is a Syncer; any other Store is durable already.
func Sync(ctx context.Context, s Store) error {
	if sy, ok := s.(Syncer); ok {
		return sy.Sync(ctx)
	}
	return nil
}

// Info describes an object.
type Info struct {
	Key     string
	Size    int64
	ModTime time.Time // when it was stored (as the storage's clock says)
}

// Range selects bytes [Offset, Offset+Length) of an object. The zero Range
// is the whole object; Length 0 means "to the end".
type Range struct {
	Offset int64
	Length int64
}

// IsWhole reports whether r selects the whole object.
func (r Range) IsWhole() bool { return r.Offset == 0 && r.Length == 0 }

// Validate checks that r is well-formed (not negative).
func (r Range) Validate() error {
	if r.Offset < 0 || r.Length < 0 {
		return errdefs.InvalidArgument(fmt.Errorf("invalid byte range: offset %d, length %d", r.Offset, r.Length))
	}
	return nil
}

// ErrNotFound is the cause of every "no such object" error of a Store:
// errors.Is(err, ErrNotFound) tells it, and its category is NotFound.
var ErrNotFound = errdefs.NotFound(errors.New("object not found"))

// NotFound returns the error of a Store for a missing key.
func NotFound(key string) error {
	return fmt.Errorf("blob %q: %w", key, ErrNotFound)
}

// IsNotFound reports whether err says an object does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// ErrRangeNotSatisfiable is the cause of a Get whose range starts at or past
// the end of the object (InvalidArgument).
var ErrRangeNotSatisfiable = errdefs.InvalidArgument(errors.New("range starts at or past the end of the object"))

// ErrSizeMismatch is the cause of a Put whose reader yields a different
// number of bytes than the size it was given (InvalidArgument).
var ErrSizeMismatch = errdefs.InvalidArgument(errors.New("content length differs from the size given"))

// SizeMismatch returns the error of a Put that read got bytes instead of
// the want it was told.
func SizeMismatch(key string, want, got int64) error {
	if got > want {
		return fmt.Errorf("blob %q: reader yields more than the %d bytes given: %w", key, want, ErrSizeMismatch)
	}
	return fmt.Errorf("blob %q: reader yielded %d bytes, %d given: %w", key, got, want, ErrSizeMismatch)
}
