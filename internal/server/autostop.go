package server

import (
	"context"
	"errors"
	"time"

	"github.com/covedev/cove/internal/autostop"
	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Auto-stop (docs/autostop.md): the server stops RUNNING environments whose
// deadline (internal/autostop) has passed, saying why in spec.stopReason.

const (
	// DefaultInactivityTimeout is given to environments created without
	// timeouts (--default-inactivity-timeout).
	DefaultInactivityTimeout = 30 * time.Minute
	// DefaultAutoStopInterval is how often the server looks for
	// environments to stop.
	DefaultAutoStopInterval = 5 * time.Second
)

// defaultTimeouts are the timeouts of an environment created without any.
func (s *Server) defaultTimeouts() *covev1.Timeouts {
	t := &covev1.Timeouts{}
	switch d := s.cfg.DefaultInactivity; {
	case d == 0:
		t.InactivitySeconds = int64(DefaultInactivityTimeout / time.Second)
	case d > 0:
		t.InactivitySeconds = max(1, int64(d/time.Second))
	}
	if d := s.cfg.DefaultMaxLifetime; d > 0 {
		t.MaxLifetimeSeconds = max(1, int64(d/time.Second))
	}
	return t
}

// applyTimeouts gives a new environment's spec the server's default
// timeouts if it has none. The spec keeps what the user asked for: the
// class's caps are those of the runner the environment is on, applied
// whenever the rule is evaluated (autoStop, KeepAlive, the runner's
// warnings, `cove env get`), never written into the spec — a runner's
// caps must not follow an environment to other runners (review REV-7).
func (s *Server) applyTimeouts(_ context.Context, spec *covev1.EnvironmentSpec) error {
	if spec.Timeouts == nil {
		spec.Timeouts = s.defaultTimeouts()
	}
	return nil
}

func secs(s int64) time.Duration { return time.Duration(s) * time.Second }

// MinClassTimeoutCap is the shortest maxInactivity or maxLifetime a
// runner may advertise for a class: a heartbeat with a shorter one is
// refused, so a misconfigured or hostile runner cannot stop the
// environments it runs seconds after they start.
const MinClassTimeoutCap = time.Minute

// classCaps is the timeout caps of class on runner runnerID, the runner
// the environment is on; nil when there is none or it does not offer the
// class. Other runners' caps never apply (review REV-7).
func classCaps(runners []store.Runner, class, runnerID string) *covev1.EnvironmentClass {
	if runnerID == "" {
		return nil
	}
	for _, r := range runners {
		if r.ID != runnerID {
			continue
		}
		for _, c := range r.Capabilities.GetClasses() {
			if c.GetId() == class {
				return c
			}
		}
		return nil
	}
	return nil
}

// withClassCaps fills env.status.classCaps, for a user's answer, with the
// caps of its class on the runner it is on, so `cove env get` shows the
// timeouts that apply. env is a copy (store answers are); never stored.
func (s *Server) withClassCaps(ctx context.Context, env *covev1.Environment) (*covev1.Environment, error) {
	if env.GetMetadata().GetRunnerId() == "" {
		return env, nil
	}
	runners, err := s.store.ListRunners(ctx)
	if err != nil {
		return nil, err
	}
	caps := classCaps(runners, env.GetSpec().GetClassId(), env.GetMetadata().GetRunnerId())
	if caps.GetMaxInactivitySeconds() == 0 && caps.GetMaxLifetimeSeconds() == 0 {
		return env, nil
	}
	if env.Status == nil {
		env.Status = &covev1.EnvironmentStatus{}
	}
	env.Status.ClassCaps = &covev1.Timeouts{InactivitySeconds: caps.GetMaxInactivitySeconds(), MaxLifetimeSeconds: caps.GetMaxLifetimeSeconds()}
	return env, nil
}

// autoStopLoop stops environments whose deadline passed, every
// AutoStopInterval, until ctx ends.
func (s *Server) autoStopLoop(ctx context.Context) {
	every := s.cfg.AutoStopInterval
	if every <= 0 {
		every = DefaultAutoStopInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := s.autoStop(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("auto-stop", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// autoStop makes one pass: every environment that runs, is meant to run
// and whose deadline passed gets desired phase STOPPED and its stop
// reason. It returns how many it stopped.
func (s *Server) autoStop(ctx context.Context) (int, error) {
	envs, err := s.store.ListEnvironments(ctx, store.EnvironmentFilter{})
	if err != nil {
		return 0, err
	}
	var runners []store.Runner
	stopped := 0
	for _, env := range envs {
		if env.GetStatus().GetPhase() != phaseRunning || env.GetSpec().GetDesiredPhase() != phaseRunning {
			continue
		}
		if runners == nil {
			if runners, err = s.store.ListRunners(ctx); err != nil {
				return stopped, err
			}
		}
		class := classCaps(runners, env.GetSpec().GetClassId(), env.GetMetadata().GetRunnerId())
		if !autostop.Evaluate(autostop.ForEnvironment(env, class, s.now())).Due(s.now()) {
			continue
		}
		var reason string
		_, err := s.store.UpdateEnvironment(ctx, env.Id, func(env *covev1.Environment) error {
			now := s.now()
			if env.GetStatus().GetPhase() != phaseRunning || env.GetSpec().GetDesiredPhase() != phaseRunning {
				return errNothingToStop
			}
			// Decide again on the stored state: a lease or activity may
			// have landed since the list.
			d := autostop.Evaluate(autostop.ForEnvironment(env, class, now))
			if !d.Due(now) {
				return errNothingToStop
			}
			reason = d.StopReason()
			env.Spec.DesiredPhase = phaseStopped
			env.Spec.StopReason = reason
			env.Spec.Leases = liveLeases(env.Spec.Leases, now)
			env.Spec.SpecVersion++
			return nil
		})
		switch {
		case errors.Is(err, errNothingToStop):
			continue
		case err != nil:
			s.log.Error("auto-stop", "env", env.Id, "err", err)
			continue
		}
		stopped++
		s.log.Info("environment stopped automatically", "env", env.Id, "name", env.GetMetadata().GetName(), "reason", reason)
	}
	return stopped, nil
}

var errNothingToStop = errors.New("nothing to stop")

// liveLeases is leases without those expired at now.
func liveLeases(leases []*covev1.Lease, now time.Time) []*covev1.Lease {
	var out []*covev1.Lease
	for _, l := range leases {
		if l.GetExpiresAt().AsTime().After(now) {
			out = append(out, l)
		}
	}
	return out
}

// clampActivity keeps a reported activity's times from the future (a
// runner's clock ahead of the server's, or a runner that lies): activity
// "in 2100" would hold the inactivity stop off for ever.
func clampActivity(st *covev1.EnvironmentStatus, now time.Time) {
	a := st.GetActivity()
	if a == nil {
		return
	}
	if t := a.GetLastActive(); t != nil && t.AsTime().After(now) {
		a.LastActive = timestamppb.New(now)
	}
	if t := a.GetWarnedAt(); t != nil && t.AsTime().After(now) {
		a.WarnedAt = timestamppb.New(now)
	}
}
