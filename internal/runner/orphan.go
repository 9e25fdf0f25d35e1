package runner

import (
	"errors"
	"os"

	"connectrpc.com/connect"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
)

// Orphans (review REV-1): the server moves an environment off a runner
// that was lost for a while (or deletes it without that runner), and then
// refuses that runner's reports about it (PermissionDenied or NotFound:
// "not assigned to this runner"). The server also sends the runner a
// DELETED copy of it (a release), which the worker carries out like any
// delete — after one last backup of a copy that changed since its last
// recorded one, when the environment lives on (spec.salvage,
// step_salvage.go); until that arrives, a worker whose report is refused so stops
// the environment (its containers, not its files: they may hold work newer
// than the backup it was moved from) and reports nothing more, instead of
// retrying for ever while its copy keeps running.

// notOurs: the server refused a report because the environment is not
// (or no longer) assigned to this runner.
func notOurs(err error) bool {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return false
	}
	return ce.Code() == connect.CodePermissionDenied || ce.Code() == connect.CodeNotFound
}

// orphan turns the worker's environment into a local stop when err says
// the server refused it as not this runner's; false if it does not, or the
// worker is an orphan already (its stop failed: retried with backoff).
func (w *worker) orphan(err error) bool {
	if !notOurs(err) {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.orphaned || w.env == nil {
		return false
	}
	env := proto.Clone(w.env).(*covev1.Environment)
	if env.Spec == nil {
		env.Spec = &covev1.EnvironmentSpec{}
	}
	if env.Spec.DesiredPhase == phaseDeleted {
		return false // deleting it anyway
	}
	env.Spec.DesiredPhase = phaseStopped
	env.Spec.StopReason = "not assigned to this runner any more"
	env.Spec.SpecVersion++
	w.env, w.orphaned = env, true
	return true
}

func (w *worker) isOrphaned() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.orphaned
}

// deletedUnheard: the environment was to be deleted, its directory is gone,
// and the server refused the report as not this runner's (a deletion it
// completed without this runner, from before releases were recorded):
// nothing is left to do or to say.
func (w *worker) deletedUnheard(err error, env *covev1.Environment) bool {
	if !notOurs(err) || env.GetSpec().GetDesiredPhase() != phaseDeleted {
		return false
	}
	_, statErr := os.Stat(w.r.layout(w.id).Dir)
	return errors.Is(statErr, os.ErrNotExist)
}
