package runner

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/features"
	"github.com/covedev/cove/internal/lifecycle"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// snapshotExcludes are not part of a features layer: cove's own mount
// points and files, and scratch space.
var snapshotExcludes = []string{"/.cove", "/workspaces", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/tmp", "/root/.cache"}

// runDevcontainer installs pending features (as root; the result becomes a
// cached layer for the next environment with the same image, features and
// options) and runs the lifecycle commands as the remote user. A failing
// command marks the devcontainer sub-status failed; the environment stays
// running and reachable so the user can fix it.
func (r *Runner) runDevcontainer(ctx context.Context, w *worker, env *covev1.Environment, lay layout, st *envState, progress, ready func()) error {
	dc := st.DC
	if dc == nil {
		ready()
		return nil
	}
	cs, err := r.rt.State(ctx, env.Id)
	if err != nil {
		return err
	}
	if !dc.FeaturesPending && hooksEmpty(dc.Hooks) {
		// Nothing to run: no agent connection needed.
		ready()
		dc.LifecyclePid = cs.Pid
		w.sub(&w.devc, subReady, "")
		return saveState(lay.state(), st)
	}
	c, err := r.pool.Get(ctx, env.Id, r.agentEndpoint(env.Id))
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(lay.logFile(), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	done := func(sub covev1.SubPhase, msg string) error {
		w.sub(&w.devc, sub, msg)
		dc.LifecyclePid = cs.Pid
		if err := saveState(lay.state(), st); err != nil {
			return err
		}
		progress()
		return nil
	}
	if dc.FeaturesPending {
		w.sub(&w.devc, subInProgress, "installing features")
		progress()
		fmt.Fprintln(logf, "Installing features...")
		code, err := c.Exec(ctx, agentclient.ExecRequest{User: "root", Dir: "/", Shell: "sh " + featuresDir + "/install.sh", Stdout: logf, Stderr: logf})
		if err != nil {
			return fmt.Errorf("install features: %w", err)
		}
		if code != 0 {
			ready()
			return done(subFailed, fmt.Sprintf("installing features failed with exit code %d (see `cove env logs %s`)", code, env.GetMetadata().GetName()))
		}
		if err := os.MkdirAll(filepath.Dir(r.featuresLayer(dc.FeaturesKey)), 0o700); err != nil {
			return err
		}
		release := r.useStore() // the snapshot's temporary directory (gc.go)
		if err := features.SnapshotLayer(lay.upper(), r.featuresLayer(dc.FeaturesKey), st.IDMap.HostID, snapshotExcludes); err != nil {
			r.log.Warn("features installed but not cached", "env", env.Id, "err", err)
		}
		release()
		dc.FeaturesPending = false
		if err := saveState(lay.state(), st); err != nil {
			return err
		}
		if len(dc.Entrypoints) > 0 {
			// Feature entrypoints exist only now: start the container again
			// so the agent runs them, as it would from a cached build.
			fmt.Fprintln(logf, "Restarting the environment to run feature entrypoints...")
			if err := r.rt.Stop(ctx, env.Id, r.cfg.StopGrace); err != nil {
				return err
			}
			if err := r.rt.Delete(ctx, env.Id); err != nil {
				return err
			}
			if err := r.start(ctx, env, lay, st, func(string) {}); err != nil {
				return err
			}
			if err := r.waitAgent(ctx, lay, st); err != nil {
				return err
			}
			r.pool.Drop(env.Id)
			if cs, err = r.rt.State(ctx, env.Id); err != nil {
				return err
			}
			if c, err = r.pool.Get(ctx, env.Id, r.agentEndpoint(env.Id)); err != nil {
				return err
			}
		}
	}
	kind := lifecycle.Start
	if !dc.CreatedDone {
		kind = lifecycle.Create
	}
	w.sub(&w.devc, subInProgress, "running lifecycle commands")
	progress()
	res, err := lifecycle.Run(ctx, agentRunner{c: c, dc: dc, env: dc.RemoteEnv}, dc.Hooks, kind, logf, ready)
	if res.CreateRan {
		dc.CreatedDone = true
	}
	if err != nil {
		if msg, ok := usererr.Message(err); ok {
			ready()
			return done(subFailed, msg+" (see `cove env logs "+env.GetMetadata().GetName()+"`)")
		}
		_ = saveState(lay.state(), st)
		return err
	}
	return done(subReady, "")
}

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
