package usererr_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/usererr"
)

func TestMessageAndCategory(t *testing.T) {
	cause := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	for _, tc := range []struct {
		name    string
		err     error
		msg     string
		visible bool
		cat     errdefs.Category
	}{
		{"new", usererr.New("image %q not found", "x"), `image "x" not found`, true, errdefs.CategoryFailedPrecondition},
		{"wrap keeps the message, not the cause's text", usererr.Wrap(cause, "registry unreachable"), "registry unreachable", true, errdefs.CategoryFailedPrecondition},
		{"wrap of a category", usererr.Wrap(errdefs.Unavailable(cause), "registry unreachable"), "registry unreachable", true, errdefs.CategoryUnavailable},
		{"category around", errdefs.NotFound(usererr.New("image %q not found", "x")), `image "x" not found`, true, errdefs.CategoryNotFound},
		{"under fmt.Errorf", fmt.Errorf("step clone: %w", usererr.New("bad URL")), "bad URL", true, errdefs.CategoryFailedPrecondition},
		{"outermost message", usererr.Wrap(usererr.New("inner"), "outer"), "outer", true, errdefs.CategoryFailedPrecondition},
		{"internal", cause, "", false, errdefs.CategoryUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, ok := usererr.Message(tc.err)
			if msg != tc.msg || ok != tc.visible {
				t.Errorf("Message = %q, %v; want %q, %v", msg, ok, tc.msg, tc.visible)
			}
			if c := errdefs.CategoryOf(tc.err); c != tc.cat {
				t.Errorf("CategoryOf = %s, want %s", c, tc.cat)
			}
		})
	}
	if usererr.Wrap(nil, "x") != nil {
		t.Error("Wrap(nil) != nil")
	}
	if err := usererr.Wrap(cause, "m"); !errors.Is(err, cause) {
		t.Error("Wrap lost its cause")
	}
}
