package server

import (
	"context"
	"fmt"
	"sync"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// Limits bound what one user may hold at once, until quotas come with
// projects. 0 means unlimited.
type Limits struct {
	// Environments running or starting (stopped and failed ones don't count).
	RunningPerUser int
	// Environments that exist (not deleted), whatever their phase: each
	// keeps a uid range, an address and a directory on its runner.
	EnvironmentsPerUser int
	// Concurrent WatchEnvironments streams (each polls the store).
	WatchesPerUser int
	// Unexpired personal access tokens.
	TokensPerUser int
}

// DefaultLimits are the server's defaults (the flags' defaults too).
func DefaultLimits() Limits {
	return Limits{RunningPerUser: 10, EnvironmentsPerUser: 50, WatchesPerUser: 16, TokensPerUser: 100}
}

// maxRunnerWatches bounds WatchAssignments streams per runner (it needs one).
const maxRunnerWatches = 4

// occupies reports whether env holds its runner's capacity now, or is about
// to: it runs, starts, updates, stops or is being deleted, or waits to be
// started. Stopped and failed environments (a failed start ends STOPPED
// with a failure message) do not.
func occupies(env *covev1.Environment) bool {
	st, spec := env.GetStatus(), env.GetSpec()
	switch {
	case st.GetPhase() == phaseDeleted:
		return false
	case env.GetMetadata().GetRunnerId() == "":
		return spec.GetDesiredPhase() == phaseRunning // waits for a runner
	case st.GetPhase() == phaseStopped || st.GetPhase() == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_UNSPECIFIED:
		// Asked to run and the runner has not answered yet.
		return spec.GetDesiredPhase() == phaseRunning && st.GetObservedSpecVersion() < spec.GetSpecVersion()
	}
	return true
}

// checkUserCapacity refuses, with a message saying what to do, when u may
// not have one more environment running (starting is true) or, for a new
// environment (except is ""), one more environment at all. except is the
// environment being started, which does not count against itself. The
// caller holds s.quotaMu until it has written, so concurrent requests of one
// replica cannot both pass.
func (s *Server) checkUserCapacity(ctx context.Context, u store.User, except string, starting bool) error {
	lim := s.cfg.Limits
	if lim.RunningPerUser <= 0 && lim.EnvironmentsPerUser <= 0 {
		return nil
	}
	envs, err := s.store.ListEnvironments(ctx, store.EnvironmentFilter{OwnerID: u.ID})
	if err != nil {
		return err
	}
	if except == "" && lim.EnvironmentsPerUser > 0 && len(envs) >= lim.EnvironmentsPerUser {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"you have %d environments, the most this server allows per user (%d): delete one first (`cove env delete NAME`)",
			len(envs), lim.EnvironmentsPerUser))
	}
	if !starting || lim.RunningPerUser <= 0 {
		return nil
	}
	n := 0
	for _, e := range envs {
		if e.Id != except && occupies(e) {
			n++
		}
	}
	if n >= lim.RunningPerUser {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"you have %d environments running or starting, the most this server allows per user (%d): stop one first (`cove env stop NAME`)",
			n, lim.RunningPerUser))
	}
	return nil
}

// streamLimiter counts open streams per key (a user or a runner).
type streamLimiter struct {
	mu   sync.Mutex
	open map[string]int
	// released, if set, is called after a stream's slot is freed (tests).
	released func(key string)
}

// acquire takes a slot for key if fewer than max are open (max 0: no
// bound); release frees it.
func (l *streamLimiter) acquire(key string, max int) (release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if max > 0 && l.open[key] >= max {
		return nil, false
	}
	if l.open == nil {
		l.open = map[string]int{}
	}
	l.open[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			if l.open[key]--; l.open[key] <= 0 {
				delete(l.open, key)
			}
			hook := l.released
			l.mu.Unlock()
			if hook != nil {
				hook(key)
			}
		})
	}, true
}
