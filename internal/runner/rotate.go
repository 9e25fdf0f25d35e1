package runner

import (
	"context"
	"encoding/json"
	"fmt"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	"github.com/covedev/cove/internal/atomicfile"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

// rotateCredentials replaces the runner's token with a new one from the
// server, saves it to path, and returns a client that uses it. The server
// keeps the old token valid until the new one is first used, so the order
// here (ask, save, then use) cannot lock the runner out: if the answer is
// lost or saving fails, the old token, still on disk, keeps working, and the
// next rotation replaces the pending one.
//
// It is meant to run once per start, in connect, after the client is built
// and before the heartbeat and watch loops use it.
func (r *Runner) rotateCredentials(ctx context.Context, path string, cred credentials, c *client) (*client, credentials, error) {
	resp, err := c.api.RotateRunnerToken(ctx, connect.NewRequest(&covev1.RotateRunnerTokenRequest{}))
	if err != nil {
		return c, cred, fmt.Errorf("rotate runner token: %w", err)
	}
	next := cred
	next.Token = resp.Msg.GetRunnerToken()
	if err := saveCredentials(path, next); err != nil {
		return c, cred, fmt.Errorf("save rotated runner token: %w", err)
	}
	api := covev1connect.NewRunnerServiceClient(r.cfg.HTTPClient, r.cfg.ServerURL, connect.WithInterceptors(apiclient.Bearer(next.Token)))
	return &client{id: cred.RunnerID, api: api}, next, nil
}

// saveCredentials replaces path atomically (mode 0600): a crash leaves the
// old file or the new one, never a torn one.
func saveCredentials(path string, cred credentials) error {
	b, err := json.MarshalIndent(cred, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}
