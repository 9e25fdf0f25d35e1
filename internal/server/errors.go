package server

import (
	"errors"
	"log/slog"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/usererr"
)

// connectCodes is the one mapping from an error's category (errdefs) to the
// API code a caller gets. A user error without a category is
// FailedPrecondition (usererr's default); an error nobody classified is
// Internal.
var connectCodes = map[errdefs.Category]connect.Code{
	errdefs.CategoryUnknown:            connect.CodeInternal,
	errdefs.CategoryInternal:           connect.CodeInternal,
	errdefs.CategoryInvalidArgument:    connect.CodeInvalidArgument,
	errdefs.CategoryNotFound:           connect.CodeNotFound,
	errdefs.CategoryAlreadyExists:      connect.CodeAlreadyExists,
	errdefs.CategoryFailedPrecondition: connect.CodeFailedPrecondition,
	errdefs.CategoryPermissionDenied:   connect.CodePermissionDenied,
	errdefs.CategoryResourceExhausted:  connect.CodeResourceExhausted,
	errdefs.CategoryUnavailable:        connect.CodeUnavailable,
	errdefs.CategoryCanceled:           connect.CodeCanceled,
	errdefs.CategoryDeadlineExceeded:   connect.CodeDeadlineExceeded,
}

// connectCode is the API code of an error of category c.
func connectCode(c errdefs.Category) connect.Code {
	if code, ok := connectCodes[c]; ok {
		return code
	}
	return connect.CodeInternal
}

// quietCategories are what callers cause in the normal course of things:
// not logged when their error has no message for users.
var quietCategories = map[errdefs.Category]bool{
	errdefs.CategoryNotFound:         true,
	errdefs.CategoryAlreadyExists:    true,
	errdefs.CategoryCanceled:         true,
	errdefs.CategoryDeadlineExceeded: true,
}

// toConnect maps errors to API codes at the edge, by category (connectCode).
// A connect error a handler made is passed on as it is. The message of a
// usererr error reaches the caller; any other error's text stays in the
// server's log, and the caller gets the category's name ("not found",
// "internal error (see server log)").
func toConnect(log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	cat := errdefs.CategoryOf(err)
	code := connectCode(cat)
	if msg, visible := usererr.Message(err); visible {
		return connect.NewError(code, errors.New(msg))
	}
	if !quietCategories[cat] {
		log.Error("internal error", "err", err, "category", cat.String())
	}
	if code == connect.CodeInternal {
		return connect.NewError(code, errors.New("internal error (see server log)"))
	}
	return connect.NewError(code, errors.New(cat.String()))
}
