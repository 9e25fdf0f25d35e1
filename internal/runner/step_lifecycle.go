package runner

import (
	"context"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/lifecycle"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/tailbuf"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// lifecycleState is the lifecycle step's section.
type lifecycleState struct {
	// CreatedDone: onCreate/updateContent/postCreate ran (once per file
	// system: a rebuild runs them again).
	CreatedDone bool `json:"createdDone,omitempty"`
	// Pid is the container init the lifecycle last ran for, so that a
	// restarted runner does not run postStartCommand again.
	Pid int `json:"pid,omitempty"`
	// CreateFailure is why a creation command (onCreate, updateContent,
	// postCreate) failed, with its output's tail: kept until a rebuild runs
	// them again, as they are not run at a later start. StartFailure is the
	// same for postStartCommand at the last start, or why the commands were
	// not run. Both are reported in status.lifecycle, also by a restarted
	// runner.
	CreateFailure string `json:"createFailure,omitempty"`
	StartFailure  string `json:"startFailure,omitempty"`

	// running is set (never saved) while lifecycle commands are due or run
	// in this reconcile pass (the results above are then the last run's):
	// what status.lifecycle says meanwhile.
	running string
}

// lifecyclePending marks st's lifecycle commands as due in this pass.
func lifecyclePending(st *envState) {
	if st != nil {
		st.Lifecycle.running = "pending: the environment is starting"
	}
}

// lifecycleStatus is status.lifecycle: IN_PROGRESS while commands are due
// or run (also after the environment became ready per waitFor), FAILED
// when one failed, READY once all ran for the container; nil before the
// environment's first lifecycle pass.
func lifecycleStatus(st *envState) *covev1.SubStatus {
	if st == nil {
		return nil
	}
	l := st.Lifecycle
	switch {
	case l.running != "":
		return &covev1.SubStatus{Phase: subInProgress, Message: l.running}
	case l.StartFailure != "" || l.CreateFailure != "":
		msgs := []string{}
		for _, m := range []string{l.StartFailure, l.CreateFailure} {
			if m != "" {
				msgs = append(msgs, m)
			}
		}
		return &covev1.SubStatus{Phase: subFailed, Message: strings.Join(msgs, "\n")}
	case l.Pid != 0:
		return &covev1.SubStatus{Phase: subReady}
	}
	return nil
}

// lifecycleStep runs devcontainer.json's lifecycle commands as the remote
// user, telling the reporter when its waitFor stage is done. A failing
// command marks the devcontainer and lifecycle sub-statuses failed; the
// environment stays running and reachable so the user can fix it.
type lifecycleStep struct {
	rt       runtime.Runtime
	agents   agentDialer
	endpoint func(envID string) agentclient.Endpoint
}

// outputTail bounds the command output a lifecycle failure's message
// carries: its last lines, at most this many bytes (the full output is in
// `cove env logs`).
const (
	outputTailBytes = 1024
	outputTailLines = 8
)

func (l lifecycleStep) run(ctx context.Context, e *stepEnv) error {
	st := e.st
	dc := st.Image.DC
	cs, err := l.rt.State(ctx, e.id())
	if err != nil {
		return err
	}
	name := e.env.GetMetadata().GetName()
	if dc == nil || st.Features.FailedPid == cs.Pid && cs.Pid != 0 {
		// Nothing to run, or the features it would run with failed to
		// install (reported by the features step).
		st.Lifecycle.running = ""
		if dc != nil {
			st.Lifecycle.StartFailure = "lifecycle commands not run: a feature failed to install (see `cove env logs " + name + "`)"
		}
		st.Lifecycle.Pid = cs.Pid // before ready: RUNNING goes out with the outcome
		e.rep.ready()
		return nil
	}
	if envconfig.HooksEmpty(dc.Hooks) {
		st.Lifecycle.running, st.Lifecycle.StartFailure = "", ""
		st.Lifecycle.Pid = cs.Pid
		e.rep.ready()
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
	st.Lifecycle.running = "running; follow them with `cove env logs " + name + " -f`"
	defer func() { st.Lifecycle.running = "" }()
	e.rep.sub(subDevcontainer, subInProgress, "running lifecycle commands")
	out := &tailbuf.Buffer{Max: outputTailBytes + 512}
	res, err := lifecycle.Run(ctx, agentRunner{c: c, dc: dc, env: dc.RemoteEnv}, dc.Hooks, kind, io.MultiWriter(logf, out), e.rep.ready)
	if res.CreateRan {
		st.Lifecycle.CreatedDone = true
		st.Lifecycle.CreateFailure = ""
	}
	st.Lifecycle.StartFailure = ""
	st.Lifecycle.running = ""
	if err != nil {
		msg, ok := usererr.Message(err)
		if !ok {
			return err
		}
		failure := msg
		if t := outputTail(out.String(), msg); t != "" {
			failure += "\n" + t
		}
		if f := res.Failed; f != nil && f.Stage != lifecycle.StagePostStart {
			st.Lifecycle.CreateFailure = failure
		} else {
			st.Lifecycle.StartFailure = failure
		}
		e.rep.ready()
		e.rep.sub(subDevcontainer, subFailed, msg+" (see `cove env logs "+name+"`)")
	} else {
		e.rep.sub(subDevcontainer, subReady, "")
	}
	st.Lifecycle.Pid = cs.Pid
	return nil
}

// outputTail is the end of a failed run's log for its message: the last
// lines before the failure line itself (which repeats msg), bounded.
func outputTail(log, msg string) string {
	log = strings.TrimRight(log, "\n")
	log = strings.TrimSuffix(log, msg)
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	if len(lines) > outputTailLines {
		lines = lines[len(lines)-outputTailLines:]
	}
	t := strings.TrimSpace(strings.Join(lines, "\n"))
	if len(t) > outputTailBytes {
		i := len(t) - outputTailBytes
		for i < len(t) && !utf8.RuneStart(t[i]) {
			i++
		}
		t = "…" + t[i:]
	}
	return strings.ToValidUTF8(t, "\uFFFD") // a command's output is any bytes
}
