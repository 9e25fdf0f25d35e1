// Package usererr marks errors whose message is safe and useful to show to a
// user (in an environment's failureMessage, a CLI error, an API response).
// Other errors are internal: they are logged, and users see a generic text.
//
// Visibility is all this package says. What kind of failure an error is —
// whether trying again may help — is internal/errdefs' business, and the
// two compose on one error:
//
//	usererr.Wrap(errdefs.Unavailable(err), "registry %s unreachable: %v", host, cause)
//	errdefs.NotFound(usererr.New("image %q not found", ref))
//
// both show their message (Message) and have their category
// (errdefs.CategoryOf: Unavailable, NotFound).
//
// A user error with no category in its chain is FailedPrecondition:
// terminal, the user must change something first. That is what a user
// error meant before categories existed, so an error nobody classified
// keeps stopping an environment with its message rather than being retried.
// Mark a transient failure (a registry or git server unreachable) with
// errdefs.Unavailable so that it is retried.
package usererr

import (
	"errors"
	"fmt"

	"github.com/covedev/cove/internal/errdefs"
)

// Error is an error whose message a user may see.
type Error struct {
	msg string
	err error
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.err }

// DefaultErrorCategory makes a user error FailedPrecondition unless its
// chain has a category of its own (see errdefs.ErrorCategoryDefault).
func (e *Error) DefaultErrorCategory() errdefs.Category {
	return errdefs.CategoryFailedPrecondition
}

// New returns a user-visible error with the formatted message.
func New(format string, args ...any) error {
	return &Error{msg: fmt.Sprintf(format, args...)}
}

// Wrap returns a user-visible error with the formatted message that wraps err
// (kept for errors.Is/As, its category and logs; its text is not shown to
// users unless the message includes it).
func Wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return &Error{msg: fmt.Sprintf(format, args...), err: err}
}

// Message returns the user-visible message in err's chain, if any.
func Message(err error) (string, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e.msg, true
	}
	return "", false
}
