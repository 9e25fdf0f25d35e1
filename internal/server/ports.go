package server

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// SharePort sets who may reach a port through the runner's HTTP proxy.
func (e *envService) SharePort(ctx context.Context, req *connect.Request[covev1.SharePortRequest]) (*connect.Response[covev1.SharePortResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("port sharing is not implemented yet"))
}

// AuthorizePortAccess answers a runner's port proxy.
func (r *runnerService) AuthorizePortAccess(ctx context.Context, req *connect.Request[covev1.AuthorizePortAccessRequest]) (*connect.Response[covev1.AuthorizePortAccessResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("port access is not implemented yet"))
}
