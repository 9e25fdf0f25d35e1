package runner

import (
	"context"
	"fmt"
	"os"
)

// restartStep starts the dev container again after features were
// installed in it, so that its agent runs the feature entrypoints that
// exist only now (as it would from a cached features layer). It clears the
// features section's RestartPending, and does nothing when the container
// was started afresh since the installation.
type restartStep struct {
	stop, del, start, wait stepper
	agents                 agentDialer
	state                  func(ctx context.Context, id string) (pid int, err error)
}

func (r restartStep) run(ctx context.Context, e *stepEnv) error {
	st := e.st
	if st == nil || !st.Features.RestartPending {
		return nil
	}
	pid, err := r.state(ctx, e.id())
	if err != nil {
		return err
	}
	if pid == st.Features.InstalledPid {
		if logf, err := os.OpenFile(e.lay.LogFile(), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintln(logf, "Restarting the environment to run feature entrypoints...")
			logf.Close()
		}
		for _, s := range []stepper{r.stop, r.del, r.start, r.wait} {
			if err := s.run(ctx, e); err != nil {
				return err
			}
		}
		r.agents.drop(e.id())
	}
	st.Features.RestartPending = false
	return nil
}
