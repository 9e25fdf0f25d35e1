package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/store"
	"github.com/covedev/cove/internal/usererr"
)

// The API code of an error is decided by its category in one place; a
// message reaches the caller only if it is a user error's, and what is not
// is logged instead of disclosed.
func TestToConnect(t *testing.T) {
	const secret = "dsn=postgres://cove:hunter2@db"
	internal := errors.New(secret)
	for _, tc := range []struct {
		name   string
		err    error
		code   connect.Code
		msg    string
		logged bool
	}{
		{"store not found", fmt.Errorf("get environment: %w", store.ErrNotFound), connect.CodeNotFound, "not found", false},
		{"store not found with a message", usererr.Wrap(store.ErrNotFound, "environment %q not found", "x"), connect.CodeNotFound, `environment "x" not found`, false},
		{"store already exists", fmt.Errorf("create: %w", store.ErrAlreadyExists), connect.CodeAlreadyExists, "already exists", false},
		{"user error without a category", usererr.New("environment %q is being deleted", "x"), connect.CodeFailedPrecondition, `environment "x" is being deleted`, false},
		{"user error, unavailable", usererr.Wrap(errdefs.Unavailable(internal), "registry r.example unreachable"), connect.CodeUnavailable, "registry r.example unreachable", false},
		{"user error, invalid argument", errdefs.InvalidArgument(usererr.New("invalid git ref %q", "-x")), connect.CodeInvalidArgument, `invalid git ref "-x"`, false},
		{"user error, permission denied", usererr.Wrap(errdefs.PermissionDenied(internal), "refused"), connect.CodePermissionDenied, "refused", false},
		{"user error, resource exhausted", errdefs.ResourceExhausted(usererr.New("this runner is full")), connect.CodeResourceExhausted, "this runner is full", false},
		{"hidden, unavailable", errdefs.Unavailable(internal), connect.CodeUnavailable, "unavailable", true},
		{"hidden, unknown", fmt.Errorf("query: %w", internal), connect.CodeInternal, "internal error (see server log)", true},
		{"hidden, internal", errdefs.Internal(internal), connect.CodeInternal, "internal error (see server log)", true},
		{"canceled", fmt.Errorf("%s: %w", secret, context.Canceled), connect.CodeCanceled, "canceled", false},
		{"deadline", fmt.Errorf("%s: %w", secret, context.DeadlineExceeded), connect.CodeDeadlineExceeded, "deadline exceeded", false},
		{"joined: terminal wins", errors.Join(errdefs.Unavailable(internal), store.ErrNotFound), connect.CodeNotFound, "not found", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			got := toConnect(slog.New(slog.NewTextHandler(&logs, nil)), tc.err)
			var ce *connect.Error
			if !errors.As(got, &ce) {
				t.Fatalf("toConnect = %v, not a connect error", got)
			}
			if ce.Code() != tc.code || ce.Message() != tc.msg {
				t.Errorf("toConnect = %s %q, want %s %q", ce.Code(), ce.Message(), tc.code, tc.msg)
			}
			if strings.Contains(ce.Message(), "hunter2") {
				t.Errorf("disclosed: %q", ce.Message())
			}
			if logged := logs.Len() > 0; logged != tc.logged {
				t.Errorf("logged %v, want %v: %s", logged, tc.logged, logs.String())
			}
		})
	}
	// A handler's own connect error passes as it is.
	own := connect.NewError(connect.CodePermissionDenied, errors.New("only organization owners may do this"))
	if got := toConnect(slog.New(slog.DiscardHandler), fmt.Errorf("x: %w", own)); connect.CodeOf(got) != connect.CodePermissionDenied {
		t.Errorf("handler's connect error: %v", got)
	}
	if toConnect(slog.New(slog.DiscardHandler), nil) != nil {
		t.Error("toConnect(nil) != nil")
	}
}

// Every category has its own API code.
func TestEveryCategoryHasACode(t *testing.T) {
	for _, c := range errdefs.Categories {
		if _, ok := connectCodes[c]; !ok {
			t.Errorf("category %s has no API code", c)
		}
	}
}
