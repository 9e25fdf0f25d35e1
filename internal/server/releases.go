package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
)

// Releases (review REV-1): when an environment leaves a runner (moved or
// rescheduled to another, or deleted while that runner was lost), the
// runner still holds a copy: running, or at least its files on disk. A
// release, kept in the store, makes the runner's assignment watch send it
// a copy of the environment that says "delete", until the runner reports
// its copy DELETED. Nothing else from that runner about the environment
// counts: its reports never touch the environment's real status, and its
// backup access stays refused (backups.go) but for one salvage of a copy
// that changed since its last recorded backup (salvage.go).

// releasedReason is what the released copy's spec says.
const releasedReason = "this environment left this runner (moved to another, or deleted while this runner was not connected): its copy here is deleted"

// recordRelease records that environment id left runner runnerID ("" is
// no runner: nothing to release); ran, that it ran there (only then may
// that runner salvage its copy).
func (s *Server) recordRelease(ctx context.Context, id, runnerID string, ran bool) error {
	if runnerID == "" {
		return nil
	}
	if err := s.store.PutRelease(ctx, store.Release{EnvironmentID: id, RunnerID: runnerID, CreatedAt: s.now(), Ran: ran}); err != nil {
		return fmt.Errorf("record the release of environment %s on runner %s: %w", id, runnerID, err)
	}
	s.log.Info("environment released from runner", "env", id, "runner", runnerID)
	return nil
}

// releasedCopy is what a runner that holds a released environment is
// told: its id and metadata as that runner knew them, assigned to it, and
// a spec that only says DELETED. Nothing of the environment's current
// spec (its new runner, restore, secrets' references) goes to it.
// Revision stays 0: the copy is no change of the environments the runner
// follows, so it must not advance the revision the runner resumes from.
// salvage: the environment lives on and the runner may back its copy up
// once before deleting it (salvage.go).
func releasedCopy(env *covev1.Environment, id, runnerID string, salvage bool) *covev1.Environment {
	out := &covev1.Environment{Id: id, Metadata: &covev1.EnvironmentMetadata{}}
	if env != nil {
		out.Metadata = proto.Clone(env.GetMetadata()).(*covev1.EnvironmentMetadata)
		if out.Metadata == nil {
			out.Metadata = &covev1.EnvironmentMetadata{}
		}
	}
	out.Metadata.RunnerId = runnerID
	out.Spec = &covev1.EnvironmentSpec{
		DesiredPhase: phaseDeleted,
		SpecVersion:  env.GetSpec().GetSpecVersion(),
		StopReason:   releasedReason,
		Salvage:      salvage,
	}
	return out
}

// sendReleases sends runner runnerID a released copy of each environment
// released from it and not sent on this stream yet (sent).
func (s *Server) sendReleases(ctx context.Context, runnerID string, sent map[string]bool, send func(*covev1.Environment) error) error {
	rels, err := s.store.ListReleases(ctx, runnerID)
	if err != nil {
		return err
	}
	for _, rel := range rels {
		if sent[rel.EnvironmentID] {
			continue
		}
		env, err := s.store.GetEnvironment(ctx, rel.EnvironmentID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		salvage, err := s.wantsSalvage(ctx, runnerID, rel.EnvironmentID)
		if err != nil {
			return err
		}
		if err := send(releasedCopy(env, rel.EnvironmentID, runnerID, salvage)); err != nil {
			return err
		}
		sent[rel.EnvironmentID] = true
	}
	return nil
}

// releasedReport handles runner rn's status report for an environment
// released from it (ok true; false when there is no such release): a
// DELETED report ends the release; any other is ignored, without error so
// the runner does not retry it. Neither touches the environment.
func (s *Server) releasedReport(ctx context.Context, rn store.Runner, id string, st *covev1.EnvironmentStatus) (*covev1.Environment, bool, error) {
	if _, err := s.store.GetRelease(ctx, id, rn.ID); errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	} else if err != nil {
		return nil, false, err
	}
	env, err := s.store.GetEnvironment(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, false, err
	}
	key := id + "/" + rn.ID
	if p := st.GetBackupProgress(); p.GetState().GetPhase() == covev1.SubPhase_SUB_PHASE_FAILED && st.GetPhase() != phaseDeleted &&
		s.salvageLogged.allow(key, s.now(), salvageLogEvery) {
		// The old runner could not salvage its copy yet (salvage.go): it
		// keeps it and tries again; the operator should know (once in a
		// while: the runner may report as often as it likes).
		s.log.Warn("a runner keeps an environment's old copy it could not back up (salvage) yet", "env", id, "runner", rn.ID,
			"why", p.GetState().GetMessage()) // bounded and cleaned (sanitizeStatus)
	}
	if st.GetPhase() == phaseDeleted {
		if err := s.store.DeleteRelease(ctx, id, rn.ID); err != nil {
			return nil, false, err
		}
		s.salvageLogged.forget(key)
		s.log.Info("released environment deleted by its old runner", "env", id, "runner", rn.ID)
	}
	salvage, err := s.wantsSalvage(ctx, rn.ID, id)
	if err != nil {
		return nil, false, err
	}
	return releasedCopy(env, id, rn.ID, salvage), true, nil
}

// salvageLogEvery is how often a released runner's failing salvage is
// logged, per environment and runner.
const salvageLogEvery = 10 * time.Minute

// logThrottle says whether something keyed may be logged again: at most
// once per interval per key. Keys are forgotten when their subject ends,
// and all of them past maxKeys (a flood of keys only costs a few lines).
type logThrottle struct {
	mu   sync.Mutex
	last map[string]time.Time
}

const logThrottleMaxKeys = 4096

func (l *logThrottle) allow(key string, now time.Time, every time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[key]; ok && now.Sub(t) < every {
		return false
	}
	if l.last == nil || len(l.last) >= logThrottleMaxKeys {
		l.last = map[string]time.Time{}
	}
	l.last[key] = now
	return true
}

func (l *logThrottle) forget(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.last, key)
}
