package runner

import (
	"context"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/lifecycle"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/usererr"
)

// lifecycleState is the lifecycle step's section.
type lifecycleState struct {
	// CreatedDone: onCreate/updateContent/postCreate ran (once per file
	// system: a rebuild runs them again).
	CreatedDone bool `json:"createdDone,omitempty"`
	// Pid is the container init the lifecycle last ran for, so that a
	// restarted runner does not run postStartCommand again.
	Pid int `json:"pid,omitempty"`
}

// lifecycleStep runs devcontainer.json's lifecycle commands as the remote
// user, telling the reporter when its waitFor stage is done. A failing
// command marks the devcontainer sub-status failed; the environment stays
// running and reachable so the user can fix it.
type lifecycleStep struct {
	rt       runtime.Runtime
	agents   agentDialer
	endpoint func(envID string) agentclient.Endpoint
}

func (l lifecycleStep) run(ctx context.Context, e *stepEnv) error {
	st := e.st
	dc := st.Image.DC
	cs, err := l.rt.State(ctx, e.id())
	if err != nil {
		return err
	}
	if dc == nil || st.Features.FailedPid == cs.Pid && cs.Pid != 0 {
		// Nothing to run, or the features it would run with failed to
		// install (reported by the features step).
		e.rep.ready()
		st.Lifecycle.Pid = cs.Pid
		return nil
	}
	if envconfig.HooksEmpty(dc.Hooks) {
		e.rep.ready()
		st.Lifecycle.Pid = cs.Pid
		e.rep.sub(subDevcontainer, subReady, "")
		return nil
	}
	c, logf, err := agentAndLog(ctx, l.agents, l.endpoint, e)
	if err != nil {
		return err
	}
	defer logf.Close()
	kind := lifecycle.Start
	if !st.Lifecycle.CreatedDone {
		kind = lifecycle.Create
	}
	e.rep.sub(subDevcontainer, subInProgress, "running lifecycle commands")
	res, err := lifecycle.Run(ctx, agentRunner{c: c, dc: dc, env: dc.RemoteEnv}, dc.Hooks, kind, logf, e.rep.ready)
	if res.CreateRan {
		st.Lifecycle.CreatedDone = true
	}
	if err != nil {
		msg, ok := usererr.Message(err)
		if !ok {
			return err
		}
		e.rep.ready()
		e.rep.sub(subDevcontainer, subFailed, msg+" (see `cove env logs "+e.env.GetMetadata().GetName()+"`)")
	} else {
		e.rep.sub(subDevcontainer, subReady, "")
	}
	st.Lifecycle.Pid = cs.Pid
	return nil
}
