package server

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// Environments of lost runners (see moves.go): rescheduled elsewhere from
// their latest backup, or their deletion completed without the runner.

// rescheduleLost handles environments on runners INACTIVE for longer than
// RescheduleAfter: a deletion completes without the runner (the backups
// stay until retention removes them); one that should run is moved to
// another runner from its latest backup, when there is one and a runner
// fits; a stopped one stays until its owner starts it (elsewhere).
func (s *Server) rescheduleLost(ctx context.Context) error {
	runners, err := s.store.ListRunners(ctx)
	if err != nil {
		return err
	}
	now := s.now()
	for _, r := range runners {
		if r.Phase == runnerActive || now.Sub(r.LastSeen) < s.cfg.RescheduleAfter {
			continue
		}
		envs, err := s.store.ListEnvironments(ctx, store.EnvironmentFilter{RunnerID: r.ID})
		if err != nil {
			return err
		}
		for _, env := range envs {
			switch env.GetSpec().GetDesiredPhase() {
			case phaseDeleted:
				if err := s.completeDeletion(ctx, env.Id, r); err != nil {
					return err
				}
			case phaseRunning:
				if err := s.reschedule(ctx, env, r, runners); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (s *Server) completeDeletion(ctx context.Context, id string, r store.Runner) error {
	_, err := s.store.UpdateEnvironment(ctx, id, func(e *covev1.Environment) error {
		e.Status.Phase = phaseDeleted
		e.Status.ObservedSpecVersion = e.Spec.GetSpecVersion()
		e.Status.FailureMessage = ""
		e.Status.Warnings = append(e.Status.Warnings, fmt.Sprintf("deleted without runner %q (not connected since %s); its backups are kept until retention removes them", r.Name, lastSeen(r)))
		e.Status.StatusVersion++
		return nil
	})
	if err != nil {
		return err
	}
	s.log.Info("environment deleted without its lost runner", "env", id, "runner", r.ID)
	return s.recordRelease(ctx, id, r.ID, false) // it deletes its copy when it returns; a deleted environment's is never salvaged
}

func (s *Server) reschedule(ctx context.Context, env *covev1.Environment, from store.Runner, runners []store.Runner) error {
	if !s.backupsEnabled() {
		return nil
	}
	if moves, err := s.store.ListMoves(ctx); err != nil {
		return err
	} else {
		for _, m := range moves {
			if m.EnvironmentID == env.Id {
				return nil
			}
		}
	}
	load, err := s.runnerLoad(ctx)
	if err != nil {
		return err
	}
	id, _ := pickRunner(runners, load, env.GetSpec().GetClassId())
	if id == "" {
		return nil // the "runner lost" message stands; retried next round
	}
	var to store.Runner
	for _, r := range runners {
		if r.ID == id {
			to = r
		}
	}
	_, err = s.moveNow(ctx, env.Id, to, from, from.ID)
	var ce *connect.Error
	if errors.As(err, &ce) {
		s.log.Debug("not rescheduled", "env", env.Id, "why", ce.Message())
		return nil // no backup: it waits for its runner
	}
	if err == nil {
		s.log.Warn("environment rescheduled from a lost runner", "env", env.Id, "from", from.ID, "to", to.ID)
	}
	return err
}

// latestBackupID is the environment's latest backup ("" if none, or
// backups are off): what a runner that never held it starts it from.
func (s *Server) latestBackupID(ctx context.Context, env *covev1.Environment) (string, error) {
	if !s.backupsEnabled() {
		return "", nil
	}
	bs, err := s.store.ListBackups(ctx, env.Id)
	if err != nil {
		return "", err
	}
	b, _ := restoreSource(env, bs) // restoresource.go
	return b.ID, nil
}
