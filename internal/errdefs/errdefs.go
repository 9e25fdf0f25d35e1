// Package errdefs says what kind of failure an error is, so that callers
// decide what to do about it without reading its text: retry later (the
// registry is unreachable), give up and tell the user (the image does not
// exist), or map it to an API code (the server, at its edge).
//
// A category is orthogonal to visibility. Whether a message may be shown to
// a user is internal/usererr's business (Tailscale's vizerror idea); what
// kind of failure it is, is this package's (containerd's errdefs, gRPC's
// codes). One error may carry both:
//
//	usererr.Wrap(errdefs.Unavailable(err), "registry %s unreachable: %v", host, cause)
//
// is shown to users as "registry … unreachable: …" and is Unavailable, so a
// reconcile loop retries it with backoff instead of stopping the
// environment.
//
// # Categories
//
// Constructors (Unavailable, NotFound, …) wrap an error without changing its
// text; errors.Is and errors.As still reach the cause. Error types may also
// carry a category themselves by implementing
//
//	ErrorCategory() errdefs.Category
//
// (hostfetch's policy refusals do). CategoryOf finds the category of an
// error chain:
//
//   - context.Canceled anywhere in the chain makes it Canceled, whatever
//     else it says: its caller stopped the operation, which says nothing
//     about the resource.
//   - Otherwise the outermost category wins: the code closest to the caller
//     knows most about what the failure means (errdefs.NotFound(err) around
//     an Unavailable cause is NotFound). context.DeadlineExceeded counts as a
//     DeadlineExceeded category where it occurs in the chain.
//   - An error that only has a default category (ErrorCategoryDefault, which
//     usererr.Error implements) takes it only when nothing below it in its
//     chain has a category. A usererr error without a category is therefore
//     FailedPrecondition, terminal, which is what usererr meant before this
//     package existed: nothing changes behaviour silently.
//   - In an errors.Join (or any error with Unwrap() []error), each branch is
//     classified on its own and the least retryable category wins, in the
//     order of Categories below (Canceled, PermissionDenied, InvalidArgument,
//     NotFound, AlreadyExists, FailedPrecondition, ResourceExhausted,
//     Unavailable, DeadlineExceeded, Internal, Unknown): retrying a joined
//     failure is useful only if every part of it may heal.
//   - An error that hides its causes behind an As method only (no Unwrap)
//     has the first category errors.As finds in it.
//   - Without any of these, an error is Unknown.
//
// # Retry or not
//
// Retryable reports whether trying again later may succeed without anybody
// changing anything:
//
//   - retried: Unavailable (the remote end or the network is down),
//     ResourceExhausted (a rate limit, a full runner: capacity comes back),
//     DeadlineExceeded, Canceled (the operation was interrupted, not
//     refused), Internal and Unknown (today's behaviour for internal errors:
//     retry with backoff, and log);
//   - terminal: InvalidArgument, NotFound, AlreadyExists,
//     FailedPrecondition, PermissionDenied (someone must change the spec,
//     the repository, the registry or the runner's configuration first).
//
// Retrying a retryable error is the caller's decision, with backoff and a
// status that says so ("registry unreachable, retrying in 8s"). A loop that
// stops on its own context checks ctx.Err() before Retryable.
package errdefs

import (
	"context"
	"errors"
)

// Category is a kind of failure. The zero value is CategoryUnknown.
type Category uint8

// The categories, named after gRPC's codes (which the server maps them to).
const (
	// CategoryUnknown: nothing in the error says what it is.
	CategoryUnknown Category = iota
	// CategoryInvalidArgument: the request or its input is malformed (a
	// bad reference, URL or manifest, a Dockerfile that does not build).
	CategoryInvalidArgument
	// CategoryNotFound: what was named does not exist (an image, a
	// repository, a branch, a record).
	CategoryNotFound
	// CategoryAlreadyExists: the name is taken.
	CategoryAlreadyExists
	// CategoryFailedPrecondition: the system is not in a state the
	// operation needs, and will not get there by waiting (the default of a
	// user-visible error).
	CategoryFailedPrecondition
	// CategoryPermissionDenied: the caller (or this runner) may not do
	// this: a registry's 401/403, a policy refusal.
	CategoryPermissionDenied
	// CategoryResourceExhausted: a quota or rate limit; capacity may come
	// back.
	CategoryResourceExhausted
	// CategoryUnavailable: the remote end or the network is not there
	// right now (connection refused or reset, a timeout, DNS, 5xx, 429).
	CategoryUnavailable
	// CategoryCanceled: the caller cancelled the operation.
	CategoryCanceled
	// CategoryDeadlineExceeded: the operation ran out of time.
	CategoryDeadlineExceeded
	// CategoryInternal: a bug or a broken invariant of this program.
	CategoryInternal
)

// Categories lists every category, the least retryable first: the order in
// which CategoryOf picks among the branches of an errors.Join.
var Categories = []Category{
	CategoryCanceled,
	CategoryPermissionDenied,
	CategoryInvalidArgument,
	CategoryNotFound,
	CategoryAlreadyExists,
	CategoryFailedPrecondition,
	CategoryResourceExhausted,
	CategoryUnavailable,
	CategoryDeadlineExceeded,
	CategoryInternal,
	CategoryUnknown,
}

var names = [...]string{
	CategoryUnknown:            "unknown",
	CategoryInvalidArgument:    "invalid argument",
	CategoryNotFound:           "not found",
	CategoryAlreadyExists:      "already exists",
	CategoryFailedPrecondition: "failed precondition",
	CategoryPermissionDenied:   "permission denied",
	CategoryResourceExhausted:  "resource exhausted",
	CategoryUnavailable:        "unavailable",
	CategoryCanceled:           "canceled",
	CategoryDeadlineExceeded:   "deadline exceeded",
	CategoryInternal:           "internal",
}

// String is the category's name in lower case ("not found"), fit for a
// generic message when an error's own text may not be shown.
func (c Category) String() string {
	if int(c) < len(names) {
		return names[c]
	}
	return "unknown"
}

// Retryable reports whether an error of this category may succeed when
// tried again later, unchanged (see the package documentation).
func (c Category) Retryable() bool {
	switch c {
	case CategoryInvalidArgument, CategoryNotFound, CategoryAlreadyExists,
		CategoryFailedPrecondition, CategoryPermissionDenied:
		return false
	}
	return true
}

// rank orders categories for errors.Join: lower is less retryable.
func (c Category) rank() int {
	for i, k := range Categories {
		if k == c {
			return i
		}
	}
	return len(Categories)
}

// ErrorCategory is implemented by errors that know their category.
type ErrorCategory interface {
	ErrorCategory() Category
}

// ErrorCategoryDefault is implemented by errors whose category is a default:
// it applies only when no error below them in their chain has one
// (usererr.Error's is FailedPrecondition).
type ErrorCategoryDefault interface {
	DefaultErrorCategory() Category
}

// categorized is an error with a category; its text is its cause's.
type categorized struct {
	err error
	cat Category
}

func (e *categorized) Error() string           { return e.err.Error() }
func (e *categorized) Unwrap() error           { return e.err }
func (e *categorized) ErrorCategory() Category { return e.cat }

// WithCategory returns err with category c; its text and chain are err's.
// It returns nil for a nil err.
func WithCategory(err error, c Category) error {
	if err == nil {
		return nil
	}
	return &categorized{err: err, cat: c}
}

// InvalidArgument marks err as CategoryInvalidArgument.
func InvalidArgument(err error) error { return WithCategory(err, CategoryInvalidArgument) }

// NotFound marks err as CategoryNotFound.
func NotFound(err error) error { return WithCategory(err, CategoryNotFound) }

// AlreadyExists marks err as CategoryAlreadyExists.
func AlreadyExists(err error) error { return WithCategory(err, CategoryAlreadyExists) }

// FailedPrecondition marks err as CategoryFailedPrecondition.
func FailedPrecondition(err error) error { return WithCategory(err, CategoryFailedPrecondition) }

// PermissionDenied marks err as CategoryPermissionDenied.
func PermissionDenied(err error) error { return WithCategory(err, CategoryPermissionDenied) }

// ResourceExhausted marks err as CategoryResourceExhausted.
func ResourceExhausted(err error) error { return WithCategory(err, CategoryResourceExhausted) }

// Unavailable marks err as CategoryUnavailable.
func Unavailable(err error) error { return WithCategory(err, CategoryUnavailable) }

// DeadlineExceeded marks err as CategoryDeadlineExceeded.
func DeadlineExceeded(err error) error { return WithCategory(err, CategoryDeadlineExceeded) }

// Canceled marks err as CategoryCanceled.
func Canceled(err error) error { return WithCategory(err, CategoryCanceled) }

// Internal marks err as CategoryInternal.
func Internal(err error) error { return WithCategory(err, CategoryInternal) }

// CategoryOf returns err's category (see the package documentation for the
// rules). A nil error is CategoryUnknown.
func CategoryOf(err error) Category {
	if err == nil {
		return CategoryUnknown
	}
	if errors.Is(err, context.Canceled) {
		return CategoryCanceled
	}
	c, _ := categoryOf(err, 0)
	return c
}

// maxDepth bounds the walk of a (malformed, cyclic) error chain.
const maxDepth = 100

// categoryOf returns the category of err's chain and whether anything in it
// had one.
func categoryOf(err error, depth int) (Category, bool) {
	for ; err != nil && depth < maxDepth; depth++ {
		if e, ok := err.(ErrorCategory); ok {
			return e.ErrorCategory(), true
		}
		if err == context.DeadlineExceeded {
			return CategoryDeadlineExceeded, true
		}
		if e, ok := err.(ErrorCategoryDefault); ok {
			if c, ok := categoryOf(unwrapOne(err), depth+1); ok {
				return c, true
			}
			return e.DefaultErrorCategory(), true
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			best, found := CategoryUnknown, false
			for _, e := range j.Unwrap() {
				c, ok := categoryOf(e, depth+1)
				if ok && (!found || c.rank() < best.rank()) {
					best, found = c, true
				}
			}
			return best, found
		}
		if _, ok := err.(interface{ Unwrap() error }); !ok {
			if _, ok := err.(interface{ As(any) bool }); ok {
				// A container that only answers errors.As (such as
				// go-containerregistry's multierrs): the first category it
				// holds.
				var ec ErrorCategory
				if errors.As(err, &ec) {
					return ec.ErrorCategory(), true
				}
				if errors.Is(err, context.DeadlineExceeded) {
					return CategoryDeadlineExceeded, true
				}
				return CategoryUnknown, false
			}
		}
		err = unwrapOne(err)
	}
	return CategoryUnknown, false
}

func unwrapOne(err error) error {
	if u, ok := err.(interface{ Unwrap() error }); ok {
		return u.Unwrap()
	}
	return nil
}

// Is reports whether err's category is c.
func Is(err error, c Category) bool { return CategoryOf(err) == c }

// Retryable reports whether err may succeed when tried again later without
// anybody changing anything (see the package documentation). It is false
// for a nil error.
func Retryable(err error) bool {
	return err != nil && CategoryOf(err).Retryable()
}
