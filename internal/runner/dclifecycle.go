package runner

import (
	"context"
	"io"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/lifecycle"
)

// snapshotExcludes are not part of a features layer: cove's own mount
// points and files, and scratch space.
var snapshotExcludes = []string{"/.cove", "/workspaces", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/tmp", "/root/.cache"}

// agentRunner runs lifecycle commands as the environment's remote user.
type agentRunner struct {
	c   *agentclient.Client
	dc  *dcState
	env []string
}

func (a agentRunner) Exec(ctx context.Context, cmd lifecycle.Command, out io.Writer) (int, error) {
	return a.c.Exec(ctx, agentclient.ExecRequest{
		User: a.dc.RemoteUser, Env: a.env, Dir: a.dc.WorkspaceFolder, UserEnvProbe: a.dc.UserEnvProbe,
		Shell: cmd.Shell, Args: cmd.Args, Stdout: out, Stderr: out,
	})
}

// hooksEmpty reports whether there is no lifecycle command at all.
func hooksEmpty(h lifecycle.Hooks) bool {
	return len(h.OnCreate)+len(h.UpdateContent)+len(h.PostCreate)+len(h.PostStart) == 0
}

func hooks(l devcontainer.Lifecycle) lifecycle.Hooks {
	conv := func(in []devcontainer.LifecycleCommand) []lifecycle.Command {
		out := make([]lifecycle.Command, 0, len(in))
		for _, c := range in {
			lc := command(c.Command)
			lc.Origin = c.Origin
			out = append(out, lc)
		}
		return out
	}
	return lifecycle.Hooks{OnCreate: conv(l.OnCreate), UpdateContent: conv(l.UpdateContent), PostCreate: conv(l.PostCreate),
		PostStart: conv(l.PostStart), PostAttach: conv(l.PostAttach), WaitFor: l.WaitFor}
}

func command(c devcontainer.Command) lifecycle.Command {
	out := lifecycle.Command{Shell: c.Shell, Args: c.Args}
	if c.Parallel != nil {
		out.Parallel = map[string]lifecycle.Command{}
		for _, n := range c.Parallel {
			out.Parallel[n.Name] = command(n.Command)
		}
	}
	return out
}
