package runner

import (
	"context"
	"io"
	"os"
	"path/filepath"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/atomicfile"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/guest"
	"github.com/covedev/cove/internal/lifecycle"
)

// snapshotExcludes are not part of a features layer: cove's own mount
// points and files, and scratch space.
var snapshotExcludes = []string{guest.Root, guest.Workspaces, guest.Hosts, guest.Hostname, guest.ResolvConf, "/tmp", "/root/.cache"}

// agentRunner runs lifecycle commands as the environment's remote user,
// with remoteEnv (the agent applies it after the user env probe).
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

// writeRemoteEnv writes the dev container's remoteEnv file
// (guest.RemoteEnvName, envconfig.Machine.RemoteEnv) into its etc
// directory, readable only by root inside the environment (owner, its
// host uid): remoteEnv can carry values from the user's side
// (${localEnv:...}) that other users of the environment need not read.
// The agent gives it to users' sessions; it is never part of the
// container's environment.
func writeRemoteEnv(etcDir string, b []byte, owner uint32) error {
	p := filepath.Join(etcDir, guest.RemoteEnvName)
	if err := atomicfile.Write(p, b, 0o600); err != nil {
		return err
	}
	return os.Lchown(p, int(owner), int(owner))
}
