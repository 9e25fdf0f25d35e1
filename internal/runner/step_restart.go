package runner

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/covedev/cove/internal/runtime"
)

// restartStep starts the dev container again after features were
// installed in it, so that its agent runs the feature entrypoints that
// exist only now (as it would from a cached features layer). A Compose
// project's other services keep running (the start step leaves running
// machines alone). It clears the features section's RestartPending, and
// does nothing when the container was started afresh since the
// installation.
type restartStep struct {
	rt          runtime.Runtime
	grace       time.Duration
	start, wait stepper
	agents      agentDialer
}

func (r restartStep) run(ctx context.Context, e *stepEnv) error {
	st := e.st
	if st == nil || !st.Features.RestartPending {
		return nil
	}
	cs, err := r.rt.State(ctx, e.id())
	if err != nil {
		return err
	}
	if cs.Pid == st.Features.InstalledPid {
		if logf, err := os.OpenFile(e.lay.LogFile(), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintln(logf, "Restarting the environment to run feature entrypoints...")
			logf.Close()
		}
		if err := r.rt.Stop(ctx, e.id(), r.grace); err != nil {
			return err
		}
		if err := r.rt.Delete(ctx, e.id()); err != nil {
			return err
		}
		for _, s := range []stepper{r.start, r.wait} {
			if err := s.run(ctx, e); err != nil {
				return err
			}
		}
		r.agents.drop(e.id())
	}
	st.Features.RestartPending = false
	return nil
}
