package server

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// The backup and keep-alive calls (issue 13) are being built; until each
// lands it answers Unimplemented. Each file that implements one removes it
// from here.

var errNotYet = errors.New("not available yet on this server")

func (e *envService) BackupEnvironment(context.Context, *connect.Request[covev1.BackupEnvironmentRequest]) (*connect.Response[covev1.BackupEnvironmentResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errNotYet)
}

func (e *envService) ListBackups(context.Context, *connect.Request[covev1.ListBackupsRequest]) (*connect.Response[covev1.ListBackupsResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errNotYet)
}

func (e *envService) RestoreEnvironment(context.Context, *connect.Request[covev1.RestoreEnvironmentRequest]) (*connect.Response[covev1.RestoreEnvironmentResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errNotYet)
}

func (r *runnerService) GetBackupAccess(context.Context, *connect.Request[covev1.GetBackupAccessRequest]) (*connect.Response[covev1.GetBackupAccessResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errNotYet)
}

func (r *runnerService) ReportBackup(context.Context, *connect.Request[covev1.ReportBackupRequest]) (*connect.Response[covev1.ReportBackupResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errNotYet)
}
