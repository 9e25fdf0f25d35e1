package runner

import (
	"context"
	"io"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/guest"
	"github.com/covedev/cove/internal/lifecycle"
)

// snapshotExcludes are not part of a features layer: cove's own mount
// points and files, and scratch space.
var snapshotExcludes = []string{guest.Root, guest.Workspaces, guest.Hosts, guest.Hostname, guest.ResolvConf, "/tmp", "/root/.cache"}

// agentRunner runs lifecycle commands as the environment's remote user.
type agentRunner struct {
	c   execer
	dc  *envconfig.DevcontainerState
	env []string
}

func (a agentRunner) Exec(ctx context.Context, cmd lifecycle.Command, out io.Writer) (int, error) {
	return a.c.Exec(ctx, agentclient.ExecRequest{
		User: a.dc.RemoteUser, Env: a.env, Dir: a.dc.WorkspaceFolder, UserEnvProbe: a.dc.UserEnvProbe,
		Shell: cmd.Shell, Args: cmd.Args, Stdout: out, Stderr: out,
	})
}
