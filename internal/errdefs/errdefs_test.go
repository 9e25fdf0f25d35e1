package errdefs_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"testing"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/usererr"
)

// typed is an error type that carries its own category, as hostfetch's
// policy refusals do.
type typed struct{}

func (typed) Error() string                   { return "typed" }
func (typed) ErrorCategory() errdefs.Category { return errdefs.CategoryPermissionDenied }

// asOnly holds errors behind As and Is methods only, as
// go-containerregistry's multierrs does.
type asOnly []error

func (m asOnly) Error() string { return "several" }
func (m asOnly) As(target any) bool {
	for _, err := range m {
		if errors.As(err, target) {
			return true
		}
	}
	return false
}
func (m asOnly) Is(target error) bool {
	for _, err := range m {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func TestCategoryOf(t *testing.T) {
	cause := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	for _, tc := range []struct {
		name string
		err  error
		want errdefs.Category
	}{
		{"nil", nil, errdefs.CategoryUnknown},
		{"plain", cause, errdefs.CategoryUnknown},
		{"wrapped plain", fmt.Errorf("pull: %w", cause), errdefs.CategoryUnknown},
		{"unavailable", errdefs.Unavailable(cause), errdefs.CategoryUnavailable},
		{"under fmt.Errorf", fmt.Errorf("pull x: %w", errdefs.NotFound(cause)), errdefs.CategoryNotFound},
		{"each constructor: invalid argument", errdefs.InvalidArgument(cause), errdefs.CategoryInvalidArgument},
		{"each constructor: already exists", errdefs.AlreadyExists(cause), errdefs.CategoryAlreadyExists},
		{"each constructor: failed precondition", errdefs.FailedPrecondition(cause), errdefs.CategoryFailedPrecondition},
		{"each constructor: permission denied", errdefs.PermissionDenied(cause), errdefs.CategoryPermissionDenied},
		{"each constructor: resource exhausted", errdefs.ResourceExhausted(cause), errdefs.CategoryResourceExhausted},
		{"each constructor: deadline exceeded", errdefs.DeadlineExceeded(cause), errdefs.CategoryDeadlineExceeded},
		{"each constructor: canceled", errdefs.Canceled(cause), errdefs.CategoryCanceled},
		{"each constructor: internal", errdefs.Internal(cause), errdefs.CategoryInternal},
		{"outermost wins", errdefs.NotFound(fmt.Errorf("x: %w", errdefs.Unavailable(cause))), errdefs.CategoryNotFound},
		{"own type", fmt.Errorf("fetch: %w", typed{}), errdefs.CategoryPermissionDenied},
		{"context canceled", fmt.Errorf("clone: %w", context.Canceled), errdefs.CategoryCanceled},
		{"canceled beats an outer category", errdefs.Unavailable(fmt.Errorf("dial: %w", context.Canceled)), errdefs.CategoryCanceled},
		{"deadline", fmt.Errorf("clone: %w", context.DeadlineExceeded), errdefs.CategoryDeadlineExceeded},
		{"outer category beats a deadline below", errdefs.Unavailable(fmt.Errorf("dial: %w", context.DeadlineExceeded)), errdefs.CategoryUnavailable},
		{"usererr without category", usererr.New("bad devcontainer.json"), errdefs.CategoryFailedPrecondition},
		{"usererr wrapping plain", usererr.Wrap(cause, "registry unreachable"), errdefs.CategoryFailedPrecondition},
		{"usererr wrapping a category", usererr.Wrap(errdefs.Unavailable(cause), "registry unreachable"), errdefs.CategoryUnavailable},
		{"usererr wrapping a wrapped category", usererr.Wrap(fmt.Errorf("x: %w", errdefs.NotFound(cause)), "m"), errdefs.CategoryNotFound},
		{"category around usererr", errdefs.NotFound(usererr.New("image not found")), errdefs.CategoryNotFound},
		{"usererr wrapping a deadline", usererr.Wrap(context.DeadlineExceeded, "timed out"), errdefs.CategoryDeadlineExceeded},
		{"usererr wrapping a join with a category", usererr.Wrap(errors.Join(cause, errdefs.Unavailable(cause)), "m"), errdefs.CategoryUnavailable},
		{"join: terminal beats retryable", errors.Join(errdefs.Unavailable(cause), errdefs.NotFound(cause)), errdefs.CategoryNotFound},
		{"join: order does not matter", errors.Join(errdefs.NotFound(cause), errdefs.Unavailable(cause)), errdefs.CategoryNotFound},
		{"join: usererr default is terminal", errors.Join(errdefs.Unavailable(cause), usererr.New("m")), errdefs.CategoryFailedPrecondition},
		{"join: known beats unknown", errors.Join(cause, errdefs.Unavailable(cause)), errdefs.CategoryUnavailable},
		{"join: permission before invalid", errors.Join(errdefs.InvalidArgument(cause), errdefs.PermissionDenied(cause)), errdefs.CategoryPermissionDenied},
		{"join: canceled anywhere", errors.Join(errdefs.NotFound(cause), context.Canceled), errdefs.CategoryCanceled},
		{"join: nothing known", errors.Join(cause, cause), errdefs.CategoryUnknown},
		{"join under fmt.Errorf", fmt.Errorf("stop: %w", errors.Join(nil, errdefs.ResourceExhausted(cause))), errdefs.CategoryResourceExhausted},
		{"multi-%w", fmt.Errorf("%w and %w", errdefs.Unavailable(cause), errdefs.InvalidArgument(cause)), errdefs.CategoryInvalidArgument},
		{"container answering As only", asOnly{errdefs.NotFound(cause), errdefs.Unavailable(cause)}, errdefs.CategoryNotFound},
		{"container answering As only, deadline", asOnly{cause, context.DeadlineExceeded}, errdefs.CategoryDeadlineExceeded},
		{"container answering As only, nothing", asOnly{cause}, errdefs.CategoryUnknown},
		{"explicit unknown hides what is below", errdefs.WithCategory(errdefs.NotFound(cause), errdefs.CategoryUnknown), errdefs.CategoryUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := errdefs.CategoryOf(tc.err); got != tc.want {
				t.Errorf("CategoryOf(%v) = %s, want %s", tc.err, got, tc.want)
			}
			if !errdefs.Is(tc.err, tc.want) {
				t.Errorf("Is(%v, %s) = false", tc.err, tc.want)
			}
		})
	}
}

func TestConstructorsKeepTheCause(t *testing.T) {
	pe := &fs.PathError{Op: "open", Path: "/x", Err: os.ErrNotExist}
	for _, wrap := range []func(error) error{
		errdefs.InvalidArgument, errdefs.NotFound, errdefs.AlreadyExists, errdefs.FailedPrecondition,
		errdefs.PermissionDenied, errdefs.ResourceExhausted, errdefs.Unavailable, errdefs.DeadlineExceeded,
		errdefs.Canceled, errdefs.Internal,
	} {
		err := wrap(pe)
		if err.Error() != pe.Error() {
			t.Errorf("text changed: %q, want %q", err.Error(), pe.Error())
		}
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: errors.Is lost the cause", errdefs.CategoryOf(err))
		}
		var got *fs.PathError
		if !errors.As(err, &got) || got != pe {
			t.Errorf("%s: errors.As lost the cause", errdefs.CategoryOf(err))
		}
		if wrap(nil) != nil {
			t.Errorf("%s: wrapping nil is not nil", errdefs.CategoryOf(err))
		}
	}
}

// A usererr carries a visible message and a category at once; the message
// is found through a category wrapper and vice versa.
func TestUserErrorAndCategoryCompose(t *testing.T) {
	cause := errors.New("dial tcp 203.0.113.7:443: i/o timeout")
	for _, err := range []error{
		usererr.Wrap(errdefs.Unavailable(cause), "registry r.example unreachable: %v", cause),
		errdefs.Unavailable(usererr.Wrap(cause, "registry r.example unreachable: %v", cause)),
		fmt.Errorf("pull: %w", usererr.Wrap(errdefs.Unavailable(cause), "registry r.example unreachable: %v", cause)),
	} {
		msg, ok := usererr.Message(err)
		if !ok || msg != "registry r.example unreachable: "+cause.Error() {
			t.Errorf("Message(%v) = %q, %v", err, msg, ok)
		}
		if c := errdefs.CategoryOf(err); c != errdefs.CategoryUnavailable {
			t.Errorf("CategoryOf(%v) = %s, want unavailable", err, c)
		}
		if !errdefs.Retryable(err) {
			t.Errorf("Retryable(%v) = false", err)
		}
		if !errors.Is(err, cause) {
			t.Errorf("%v: lost its cause", err)
		}
	}
}

func TestRetryable(t *testing.T) {
	want := map[errdefs.Category]bool{
		errdefs.CategoryUnknown:            true,
		errdefs.CategoryInternal:           true,
		errdefs.CategoryUnavailable:        true,
		errdefs.CategoryResourceExhausted:  true,
		errdefs.CategoryDeadlineExceeded:   true,
		errdefs.CategoryCanceled:           true,
		errdefs.CategoryInvalidArgument:    false,
		errdefs.CategoryNotFound:           false,
		errdefs.CategoryAlreadyExists:      false,
		errdefs.CategoryFailedPrecondition: false,
		errdefs.CategoryPermissionDenied:   false,
	}
	if len(want) != len(errdefs.Categories) {
		t.Fatalf("the table covers %d categories, there are %d", len(want), len(errdefs.Categories))
	}
	for _, c := range errdefs.Categories {
		w, ok := want[c]
		if !ok {
			t.Errorf("category %s is not in the table", c)
			continue
		}
		if got := c.Retryable(); got != w {
			t.Errorf("%s.Retryable() = %v, want %v", c, got, w)
		}
		if got := errdefs.Retryable(errdefs.WithCategory(errors.New("x"), c)); got != w {
			t.Errorf("Retryable(error of %s) = %v, want %v", c, got, w)
		}
	}
	if errdefs.Retryable(nil) {
		t.Error("Retryable(nil) = true")
	}
	// A user error nobody classified stays terminal.
	if errdefs.Retryable(usererr.New("fix your devcontainer.json")) {
		t.Error("an unclassified user error is retryable")
	}
}

// Every category has a distinct name, and Categories lists each once.
func TestCategoryNames(t *testing.T) {
	seen := map[string]errdefs.Category{}
	for _, c := range errdefs.Categories {
		n := c.String()
		if n == "" {
			t.Errorf("category %d has no name", c)
		}
		if o, dup := seen[n]; dup {
			t.Errorf("categories %d and %d are both %q", o, c, n)
		}
		seen[n] = c
	}
	if got := errdefs.Category(200).String(); got != "unknown" {
		t.Errorf("out-of-range category = %q", got)
	}
}
