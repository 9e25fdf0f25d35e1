package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// A stepper does one planned step for an environment (plan.go names the
// steps; steps.go maps names to steppers). Each stepper owns one section of
// the environment's state (its file says which), which it may change; it
// reads the others. The loop in apply saves the state after every step,
// whether it succeeded or not, so a step never saves and a runner killed
// between two steps finds the state the first one left. Steps are
// idempotent: a runner killed in the middle of one runs it again.
type stepper interface {
	run(ctx context.Context, e *stepEnv) error
}

// stepEnv is what a step works on.
type stepEnv struct {
	env *covev1.Environment
	lay envdir.Layout
	st  *envState // nil until the prepare step made it
	rep reporter
}

func (e *stepEnv) id() string { return e.env.GetId() }

// subStatus names one of an environment's sub-statuses.
type subStatus int

const (
	subContent      subStatus = iota // the checkout
	subMachine                       // image, file system, container
	subDevcontainer                  // features and lifecycle commands
)

// reporter is how steps tell the world how they are doing: a sub-status
// (sent in the background, never delaying the step), and ready when the
// environment may take users (devcontainer.json's waitFor stage is done)
// while later steps go on.
type reporter interface {
	sub(which subStatus, phase covev1.SubPhase, msg string)
	ready()
}

// apply runs steps in order, saving the state after each. A step's error
// stops the run; its user-visible message, if it has one, goes to the
// machine sub-status (the clone step reports on the content sub-status
// itself).
func (r *Runner) apply(ctx context.Context, e *stepEnv, steps []step) error {
	var saved []byte // what the state file holds, as far as this run knows
	if e.st != nil {
		saved, _ = envdir.Encode(e.st)
	}
	for _, s := range steps {
		sp, ok := r.steps[s]
		if !ok {
			return fmt.Errorf("no stepper for step %q", s)
		}
		began := r.clock.Now()
		err := sp.run(ctx, e)
		if e.st != nil {
			var serr error
			if saved, serr = envdir.SaveIfChanged(e.lay.State(), e.st, saved); serr != nil {
				err = errors.Join(err, fmt.Errorf("save state: %w", serr))
			}
		}
		if err != nil {
			if s != stepClone {
				if msg, ok := usererr.Message(err); ok {
					e.rep.sub(subMachine, subFailed, msg)
				}
			}
			return fmt.Errorf("%s: %w", s, err)
		}
		r.log.Info("step done", "env", e.id(), "step", string(s), "took", r.clock.Since(began).Round(time.Microsecond))
	}
	return nil
}

func userMessage(err error) string {
	if msg, ok := usererr.Message(err); ok {
		return msg
	}
	return "internal error (see runner log)"
}
