// Package apiclient builds authenticated Connect clients for cove's API.
package apiclient

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

// Bearer returns an interceptor that sends tok on unary and streaming calls.
func Bearer(tok string) connect.Interceptor { return bearer(tok) }

type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		c := next(ctx, spec)
		c.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return c
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// Clients are the API's services for one server and token.
type Clients struct {
	Environments covev1connect.EnvironmentServiceClient
	Users        covev1connect.UserServiceClient
	Runners      covev1connect.RunnerServiceClient
}

// New returns clients for serverURL; an empty token makes anonymous calls.
func New(hc *http.Client, serverURL, token string) *Clients {
	var opts []connect.ClientOption
	if token != "" {
		opts = append(opts, connect.WithInterceptors(Bearer(token)))
	}
	return &Clients{
		Environments: covev1connect.NewEnvironmentServiceClient(hc, serverURL, opts...),
		Users:        covev1connect.NewUserServiceClient(hc, serverURL, opts...),
		Runners:      covev1connect.NewRunnerServiceClient(hc, serverURL, opts...),
	}
}
