package runner

import (
	"context"
	"time"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/usererr"
)

// agentTimeout is how long a started agent may take to answer.
const agentTimeout = 60 * time.Second

// waitAgentStep waits until the dev container's agent answers on its
// socket. It owns no state.
type waitAgentStep struct {
	agents   agentDialer
	endpoint func(envID string) agentclient.Endpoint
	clock    clock
}

func (w waitAgentStep) run(ctx context.Context, e *stepEnv) error {
	began := w.clock.Now()
	deadline := began.Add(agentTimeout)
	var err error
	// The agent usually listens within a few milliseconds of the start:
	// poll every millisecond for the first 50 ms, then back off.
	delay := time.Millisecond
	ep := w.endpoint(e.id())
	for w.clock.Now().Before(deadline) {
		if err = w.agents.probe(ctx, ep); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.clock.After(delay):
		}
		if w.clock.Since(began) > 50*time.Millisecond {
			delay = min(delay*2, 50*time.Millisecond)
		}
	}
	// Terminal whatever the probe's error says (a stalled handshake ends
	// in a deadline, which alone would be retried): what runs inside the
	// environment never decides that the runner tries forever.
	return errdefs.FailedPrecondition(usererr.Wrap(err, "the environment's agent did not start within %s: %s", agentTimeout, tail(consoleLog(e.lay, e.st), 400)))
}
