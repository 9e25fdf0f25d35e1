// Package storetest is the conformance suite every store.Store
// implementation runs.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// Run runs the suite; newStore returns an empty, migrated store.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("Accounts", func(t *testing.T) { testAccounts(t, newStore(t)) })
	t.Run("JoinTokenOnce", func(t *testing.T) { testJoinToken(t, newStore(t)) })
	t.Run("JoinFailureKeepsToken", func(t *testing.T) { testJoinFailureKeepsToken(t, newStore(t)) })
	t.Run("Runners", func(t *testing.T) { testRunners(t, newStore(t)) })
	t.Run("RunnerLiveness", func(t *testing.T) { testRunnerLiveness(t, newStore(t)) })
	t.Run("Tokens", func(t *testing.T) { testTokens(t, newStore(t)) })
	t.Run("RunnerTokens", func(t *testing.T) { testRunnerTokens(t, newStore(t)) })
	t.Run("Environments", func(t *testing.T) { testEnvironments(t, newStore(t)) })
	t.Run("Revisions", func(t *testing.T) { testRevisions(t, newStore(t)) })
	t.Run("ConcurrentUpdates", func(t *testing.T) { testConcurrent(t, newStore(t)) })
	t.Run("Backups", func(t *testing.T) { testBackups(t, newStore(t)) })
	t.Run("BackupKeys", func(t *testing.T) { testBackupKeys(t, newStore(t)) })
	t.Run("Moves", func(t *testing.T) { testMoves(t, newStore(t)) })
	t.Run("Releases", func(t *testing.T) { testReleases(t, newStore(t)) })
}

func seed(t *testing.T, s store.Store) store.User {
	t.Helper()
	ctx := context.Background()
	if err := s.CreateOrganization(ctx, store.Organization{ID: "org1", Name: "default", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	u := store.User{ID: "u1", OrganizationID: "org1", Name: "alice", Role: store.RoleOwner, CreatedAt: time.Now()}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	return u
}

func testAccounts(t *testing.T, s store.Store) {
	ctx := context.Background()
	u := seed(t, s)
	if err := s.CreateUser(ctx, store.User{ID: "u2", OrganizationID: "org1", Name: "alice", Role: store.RoleMember}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("duplicate user name: got %v, want ErrAlreadyExists", err)
	}
	got, err := s.GetUserByName(ctx, "alice")
	if err != nil || got.ID != u.ID || got.Role != store.RoleOwner {
		t.Fatalf("GetUserByName = %+v, %v", got, err)
	}
	if _, err := s.GetUser(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUser(nope) = %v, want ErrNotFound", err)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	if err := s.CreateToken(ctx, store.Token{ID: "t1", UserID: u.ID, Name: "cli", Hash: "h1", CreatedAt: time.Now(), ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	tok, err := s.GetTokenByHash(ctx, "h1")
	if err != nil || tok.UserID != u.ID || !tok.ExpiresAt.Equal(exp) {
		t.Fatalf("GetTokenByHash = %+v, %v", tok, err)
	}
	if _, err := s.GetTokenByHash(ctx, "h2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown token: %v", err)
	}
	org, err := s.GetOrganizationByName(ctx, "default")
	if err != nil || org.ID != "org1" {
		t.Fatalf("GetOrganizationByName = %+v, %v", org, err)
	}
}

func testJoinToken(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now()
	if err := s.CreateJoinToken(ctx, store.JoinToken{Hash: "j1", CreatedBy: "u1", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateJoinToken(ctx, store.JoinToken{Hash: "old", CreatedBy: "u1", ExpiresAt: now.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := s.JoinRunner(ctx, "old", newRunner("r0", "rh0"), now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired token: %v", err)
	}
	if err := s.JoinRunner(ctx, "nope", newRunner("r0", "rh0"), now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown token: %v", err)
	}
	// Many runners race for one token: exactly one wins, and exactly one
	// runner exists afterwards.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			err := s.JoinRunner(ctx, "j1", newRunner(fmt.Sprintf("r%d", i), fmt.Sprintf("rh%d", i)), now)
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, store.ErrConflict) {
				t.Errorf("join: %v", err)
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("join token consumed %d times, want 1", wins)
	}
	if list, err := s.ListRunners(ctx); err != nil || len(list) != 1 {
		t.Fatalf("runners after the race: %v, %v; want exactly one", list, err)
	}
}

// testJoinFailureKeepsToken: a runner that cannot be created (here: its
// token hash is taken) does not spend the join token.
func testJoinFailureKeepsToken(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now()
	for _, h := range []string{"j1", "j2"} {
		if err := s.CreateJoinToken(ctx, store.JoinToken{Hash: h, CreatedBy: "u1", ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.JoinRunner(ctx, "j1", newRunner("r1", "taken"), now); err != nil {
		t.Fatal(err)
	}
	err := s.JoinRunner(ctx, "j2", newRunner("r2", "taken"), now)
	if err == nil {
		t.Fatal("second runner with the same token hash was created")
	}
	if _, err := s.GetRunner(ctx, "r2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("failed join left a runner behind: %v", err)
	}
	if err := s.JoinRunner(ctx, "j2", newRunner("r2", "fresh"), now); err != nil {
		t.Fatalf("join token spent by the failed creation: %v", err)
	}
	if err := s.JoinRunner(ctx, "j2", newRunner("r3", "other"), now); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("join token usable twice: %v", err)
	}
}

// testRunnerLiveness: a heartbeat and the liveness pass's mark decide in
// the statement that writes, so neither overwrites the other.
func testRunnerLiveness(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	if err := s.CreateJoinToken(ctx, store.JoinToken{Hash: "j", CreatedBy: "u1", ExpiresAt: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.JoinRunner(ctx, "j", newRunner("r1", "rh1"), t0); err != nil {
		t.Fatal(err)
	}
	phase := func() covev1.RunnerPhase {
		t.Helper()
		r, err := s.GetRunner(ctx, "r1")
		if err != nil {
			t.Fatal(err)
		}
		return r.Phase
	}
	caps := &covev1.RunnerCapabilities{Cpus: 3}
	if was, err := s.TouchRunner(ctx, "r1", caps, t0); err != nil || !was {
		t.Fatalf("first heartbeat of an INACTIVE runner: wasInactive %v, %v", was, err)
	}
	if was, err := s.TouchRunner(ctx, "r1", caps, t0.Add(time.Minute)); err != nil || was {
		t.Fatalf("heartbeat of an ACTIVE runner: wasInactive %v, %v", was, err)
	}
	if r, _ := s.GetRunner(ctx, "r1"); r.Phase != covev1.RunnerPhase_RUNNER_PHASE_ACTIVE || !r.LastSeen.Equal(t0.Add(time.Minute)) || r.Capabilities.GetCpus() != 3 {
		t.Fatalf("after heartbeats: %+v", r)
	}
	// A pass that read the runner before the heartbeat at t0+1m asks for
	// "last seen before t0+30s": the heartbeat wins.
	if ok, err := s.MarkRunnerInactive(ctx, "r1", t0.Add(30*time.Second)); err != nil || ok || phase() != covev1.RunnerPhase_RUNNER_PHASE_ACTIVE {
		t.Fatalf("mark over a newer heartbeat: %v, %v, phase %v", ok, err, phase())
	}
	if ok, err := s.MarkRunnerInactive(ctx, "r1", t0.Add(2*time.Minute)); err != nil || !ok || phase() != covev1.RunnerPhase_RUNNER_PHASE_INACTIVE {
		t.Fatalf("mark a silent runner: %v, %v, phase %v", ok, err, phase())
	}
	if ok, err := s.MarkRunnerInactive(ctx, "r1", t0.Add(2*time.Minute)); err != nil || ok {
		t.Fatalf("mark an INACTIVE runner again: %v, %v", ok, err)
	}
	if was, err := s.TouchRunner(ctx, "r1", caps, t0.Add(3*time.Minute)); err != nil || !was || phase() != covev1.RunnerPhase_RUNNER_PHASE_ACTIVE {
		t.Fatalf("heartbeat after the mark: wasInactive %v, %v, phase %v", was, err, phase())
	}
	if _, err := s.TouchRunner(ctx, "nope", caps, t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("heartbeat of an unknown runner: %v", err)
	}
	if ok, err := s.MarkRunnerInactive(ctx, "nope", t0); err != nil || ok {
		t.Fatalf("mark an unknown runner: %v, %v", ok, err)
	}
}

func newRunner(id, tokenHash string) store.Runner {
	return store.Runner{ID: id, Name: "host-" + id, TokenHash: tokenHash, Phase: covev1.RunnerPhase_RUNNER_PHASE_INACTIVE,
		Capabilities: &covev1.RunnerCapabilities{}, CreatedAt: time.Now()}
}

func testRunners(t *testing.T, s store.Store) {
	ctx := context.Background()
	r := store.Runner{ID: "r1", Name: "host-a", TokenHash: "rh1", Phase: covev1.RunnerPhase_RUNNER_PHASE_ACTIVE,
		Capabilities: &covev1.RunnerCapabilities{Cpus: 2, MaxEnvironments: 4, Classes: []*covev1.EnvironmentClass{{Id: "small"}}},
		LastSeen:     time.Now(), CreatedAt: time.Now()}
	if err := s.CreateJoinToken(ctx, store.JoinToken{Hash: "j", CreatedBy: "u1", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.JoinRunner(ctx, "j", r, time.Now()); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetRunnerByTokenHash(ctx, "rh1")
	if err != nil || got.ID != "r1" || got.Capabilities.GetClasses()[0].GetId() != "small" {
		t.Fatalf("GetRunnerByTokenHash = %+v, %v", got, err)
	}
	got.Phase = covev1.RunnerPhase_RUNNER_PHASE_INACTIVE
	got.Capabilities.MaxEnvironments = 9
	if err := s.UpdateRunner(ctx, got); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListRunners(ctx)
	if err != nil || len(list) != 1 || list[0].Phase != covev1.RunnerPhase_RUNNER_PHASE_INACTIVE || list[0].Capabilities.MaxEnvironments != 9 {
		t.Fatalf("ListRunners = %+v, %v", list, err)
	}
	if err := s.UpdateRunner(ctx, store.Runner{ID: "nope"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update unknown runner: %v", err)
	}
}

func newEnv(id, owner, name string) *covev1.Environment {
	return &covev1.Environment{
		Id:       id,
		Metadata: &covev1.EnvironmentMetadata{Id: id, OrganizationId: "org1", OwnerId: owner, Name: name},
		Spec:     &covev1.EnvironmentSpec{DesiredPhase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, SpecVersion: 1},
		Status:   &covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_CREATING},
	}
}

func testEnvironments(t *testing.T, s store.Store) {
	ctx := context.Background()
	e, err := s.CreateEnvironment(ctx, newEnv("e1", "u1", "demo"))
	if err != nil || e.Revision == 0 {
		t.Fatalf("create: %+v, %v", e, err)
	}
	if _, err := s.CreateEnvironment(ctx, newEnv("e2", "u1", "demo")); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := s.CreateEnvironment(ctx, newEnv("e3", "u2", "demo")); err != nil {
		t.Fatalf("same name, other owner: %v", err)
	}
	got, err := s.GetEnvironmentByName(ctx, "u1", "demo")
	if err != nil || got.Id != "e1" {
		t.Fatalf("by name: %+v %v", got, err)
	}
	upd, err := s.UpdateEnvironment(ctx, "e1", func(env *covev1.Environment) error {
		env.Metadata.RunnerId = "r1"
		env.Status.Phase = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING
		return nil
	})
	if err != nil || upd.Revision <= e.Revision {
		t.Fatalf("update: %+v %v", upd, err)
	}
	boom := errors.New("boom")
	if _, err := s.UpdateEnvironment(ctx, "e1", func(env *covev1.Environment) error {
		env.Metadata.Name = "changed"
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("fn error not returned: %v", err)
	}
	got, _ = s.GetEnvironment(ctx, "e1")
	if got.Metadata.Name != "demo" || got.Metadata.RunnerId != "r1" || got.Revision != upd.Revision {
		t.Fatalf("after failed update: %+v", got)
	}
	onRunner, err := s.ListEnvironments(ctx, store.EnvironmentFilter{RunnerID: "r1"})
	if err != nil || len(onRunner) != 1 {
		t.Fatalf("by runner: %v %v", onRunner, err)
	}
	unassigned, err := s.ListEnvironments(ctx, store.EnvironmentFilter{Unassigned: true})
	if err != nil || len(unassigned) != 1 || unassigned[0].Id != "e3" {
		t.Fatalf("unassigned: %v %v", unassigned, err)
	}
	// Deleting frees the name but keeps the record for watchers.
	if _, err := s.UpdateEnvironment(ctx, "e1", func(env *covev1.Environment) error {
		env.Status.Phase = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetEnvironmentByName(ctx, "u1", "demo"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted env found by name: %v", err)
	}
	if _, err := s.CreateEnvironment(ctx, newEnv("e4", "u1", "demo")); err != nil {
		t.Fatalf("reuse name after delete: %v", err)
	}
	live, _ := s.ListEnvironments(ctx, store.EnvironmentFilter{OwnerID: "u1"})
	all, _ := s.ListEnvironments(ctx, store.EnvironmentFilter{OwnerID: "u1", IncludeDeleted: true})
	if len(live) != 1 || len(all) != 2 {
		t.Fatalf("live=%d all=%d, want 1 and 2", len(live), len(all))
	}
	if _, err := s.UpdateEnvironment(ctx, "nope", func(*covev1.Environment) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update unknown: %v", err)
	}
}

func testRevisions(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := s.Changes(ctx)
	start, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := s.CreateEnvironment(ctx, newEnv(fmt.Sprintf("e%d", i), "u1", fmt.Sprintf("n%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("no change notification")
	}
	mid, _ := s.Revision(ctx)
	if mid != start+3 {
		t.Fatalf("revision %d, want %d", mid, start+3)
	}
	if _, err := s.UpdateEnvironment(ctx, "e0", func(env *covev1.Environment) error { env.Status.FailureMessage = "x"; return nil }); err != nil {
		t.Fatal(err)
	}
	since, err := s.ListEnvironments(ctx, store.EnvironmentFilter{SinceRevision: mid})
	if err != nil || len(since) != 1 || since[0].Id != "e0" || since[0].Revision != mid+1 {
		t.Fatalf("since %d: %v %v", mid, since, err)
	}
	cancel()
	for range changes {
	}
}

func testConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.CreateEnvironment(ctx, newEnv("e1", "u1", "demo")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.UpdateEnvironment(ctx, "e1", func(env *covev1.Environment) error {
				env.Spec.SpecVersion++
				return nil
			}); err != nil {
				t.Errorf("update: %v", err)
			}
		}()
	}
	wg.Wait()
	got, err := s.GetEnvironment(ctx, "e1")
	if err != nil || got.Spec.SpecVersion != 21 {
		t.Fatalf("specVersion = %d (%v), want 21: lost updates", got.GetSpec().GetSpecVersion(), err)
	}
}
