package server

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// pickRunner chooses the runner for an environment of class: an ACTIVE
// runner that offers the class and has room (fewer environments than its
// maximum), preferring the least loaded, then the oldest. It returns "" and
// a reason a user can act on when none fits.
func pickRunner(runners []store.Runner, load map[string]int, class string) (string, string) {
	var fits []store.Runner
	active, offering := 0, 0
	for _, r := range runners {
		if r.Phase != covev1.RunnerPhase_RUNNER_PHASE_ACTIVE {
			continue
		}
		active++
		if !offersClass(r, class) {
			continue
		}
		offering++
		if max := r.Capabilities.GetMaxEnvironments(); max > 0 && load[r.ID] >= int(max) {
			continue
		}
		fits = append(fits, r)
	}
	switch {
	case active == 0:
		return "", "no runner available: no runner is connected (start one with `cove runner`)"
	case offering == 0:
		return "", fmt.Sprintf("no runner available: no active runner offers class %q", class)
	case len(fits) == 0:
		return "", fmt.Sprintf("no runner available: every runner offering class %q is full", class)
	}
	sort.SliceStable(fits, func(i, j int) bool {
		if load[fits[i].ID] != load[fits[j].ID] {
			return load[fits[i].ID] < load[fits[j].ID]
		}
		return fits[i].CreatedAt.Before(fits[j].CreatedAt)
	})
	return fits[0].ID, ""
}

func offersClass(r store.Runner, class string) bool {
	for _, c := range r.Capabilities.GetClasses() {
		if c.GetId() == class {
			return true
		}
	}
	return false
}

// runnerLoad counts, per runner, the environments that hold its capacity
// (see occupies): stopped and failed ones leave room for others.
func (s *Server) runnerLoad(ctx context.Context) (map[string]int, error) {
	envs, err := s.store.ListEnvironments(ctx, store.EnvironmentFilter{})
	if err != nil {
		return nil, err
	}
	load := map[string]int{}
	for _, e := range envs {
		if id := e.GetMetadata().GetRunnerId(); id != "" && occupies(e) {
			load[id]++
		}
	}
	return load, nil
}

// schedule assigns env to a runner if it has none, or records why it can't.
func (s *Server) schedule(ctx context.Context, env *covev1.Environment) (*covev1.Environment, error) {
	if env.GetMetadata().GetRunnerId() != "" || env.GetSpec().GetDesiredPhase() != phaseRunning {
		return env, nil
	}
	runners, err := s.store.ListRunners(ctx)
	if err != nil {
		return nil, err
	}
	load, err := s.runnerLoad(ctx)
	if err != nil {
		return nil, err
	}
	id, reason := pickRunner(runners, load, env.GetSpec().GetClassId())
	if id == "" && env.GetStatus().GetFailureMessage() == reason {
		return env, nil // nothing new to say
	}
	latest, err := s.latestBackupID(ctx, env) // moves.go
	if err != nil {
		return nil, err
	}
	return s.store.UpdateEnvironment(ctx, env.Id, func(e *covev1.Environment) error {
		if e.GetMetadata().GetRunnerId() != "" {
			return nil // scheduled concurrently
		}
		e.Metadata.RunnerId = id
		e.Status.FailureMessage = reason
		if id != "" && latest != "" {
			// Its content is in its backups (its runner was removed).
			e.Spec.Restore = &covev1.RestoreRequest{BackupId: latest, Generation: restoreGeneration(e) + 1}
			e.Spec.SpecVersion++
		}
		if id != "" {
			s.log.Info("environment scheduled", "env", e.Id, "runner", id)
		}
		return nil
	})
}

// schedulePending retries environments that have no runner yet.
func (s *Server) schedulePending(ctx context.Context) error {
	envs, err := s.store.ListEnvironments(ctx, store.EnvironmentFilter{Unassigned: true})
	if err != nil {
		return err
	}
	for _, env := range envs {
		if _, err := s.schedule(ctx, env); err != nil {
			return fmt.Errorf("schedule %s: %w", env.Id, err)
		}
	}
	return nil
}

// reconcileRunners marks runners without a recent heartbeat INACTIVE and
// tells the owners of their environments.
func (s *Server) reconcileRunners(ctx context.Context) error {
	runners, err := s.store.ListRunners(ctx)
	if err != nil {
		return err
	}
	now := s.now()
	for _, r := range runners {
		if r.Phase != covev1.RunnerPhase_RUNNER_PHASE_ACTIVE || now.Sub(r.LastSeen) < s.cfg.RunnerTimeout {
			continue
		}
		// Only if no heartbeat came in since the list was read: writing
		// the whole runner back would overwrite it, and the runner would
		// stay INACTIVE while it is there.
		marked, err := s.store.MarkRunnerInactive(ctx, r.ID, now.Add(-s.cfg.RunnerTimeout))
		if err != nil {
			return err
		}
		if !marked {
			continue
		}
		r.Phase = covev1.RunnerPhase_RUNNER_PHASE_INACTIVE
		s.log.Warn("runner lost", "runner", r.ID, "name", r.Name, "lastSeen", r.LastSeen)
		envs, err := s.store.ListEnvironments(ctx, store.EnvironmentFilter{RunnerID: r.ID})
		if err != nil {
			return err
		}
		msg := runnerLostPrefix(r) + fmt.Sprintf(" no heartbeat since %s", r.LastSeen.Format("2006-01-02 15:04:05 MST"))
		for _, env := range envs {
			if _, err := s.store.UpdateEnvironment(ctx, env.Id, func(e *covev1.Environment) error {
				e.Status.FailureMessage = msg
				e.Status.StatusVersion++
				return nil
			}); err != nil {
				return err
			}
		}
		// A heartbeat that came in while the messages were written has
		// cleared those written before it, not those after.
		if cur, err := s.store.GetRunner(ctx, r.ID); err == nil && cur.Phase == covev1.RunnerPhase_RUNNER_PHASE_ACTIVE {
			if err := s.clearRunnerLost(ctx, cur); err != nil {
				return err
			}
		}
	}
	return nil
}

func runnerLostPrefix(r store.Runner) string { return fmt.Sprintf("runner %q lost:", r.Name) }

// clearRunnerLost removes the "runner lost" message the server set on the
// runner's environments, now that it is back.
func (s *Server) clearRunnerLost(ctx context.Context, r store.Runner) error {
	envs, err := s.store.ListEnvironments(ctx, store.EnvironmentFilter{RunnerID: r.ID})
	if err != nil {
		return err
	}
	for _, env := range envs {
		if !strings.HasPrefix(env.GetStatus().GetFailureMessage(), runnerLostPrefix(r)) {
			continue
		}
		if _, err := s.store.UpdateEnvironment(ctx, env.Id, func(e *covev1.Environment) error {
			if strings.HasPrefix(e.Status.FailureMessage, runnerLostPrefix(r)) {
				e.Status.FailureMessage = ""
				e.Status.StatusVersion++
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}
