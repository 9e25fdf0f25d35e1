// Package usererr marks errors whose message is safe and useful to show to a
// user (in an environment's failureMessage, a CLI error, an API response).
// Other errors are internal: they are logged, and users see a generic text.
package usererr

import (
	"errors"
	"fmt"
)

// Error is an error whose message a user may see.
type Error struct {
	msg string
	err error
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.err }

// New returns a user-visible error with the formatted message.
func New(format string, args ...any) error {
	return &Error{msg: fmt.Sprintf(format, args...)}
}

// Wrap returns a user-visible error with the formatted message that wraps err
// (kept for errors.Is/As and logs; its text is not shown to users unless the
// message includes it).
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
