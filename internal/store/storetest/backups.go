package storetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/store"
)

func testBackups(t *testing.T, s store.Store) {
	ctx := context.Background()
	seed(t, s)
	base := time.Now().Truncate(time.Millisecond).UTC()
	mk := func(id, env, org string, at time.Duration) store.Backup {
		return store.Backup{ID: id, EnvironmentID: env, OrganizationID: org, RunnerID: "r1", Trigger: "stop", Time: base.Add(at),
			Files: 3, Bytes: 30, BytesNew: 10, BytesReused: 20, StoredBytes: 12, DurationMS: 40, FrozenMS: 5}
	}
	first := mk("b1", "e1", "org1", 0)
	first.Skipped = []string{"/run/sock", "/dev/null"}
	second := mk("b2", "e1", "org1", time.Minute)
	second.Previous = "b1"
	second.Trigger = "manual"
	other := mk("b3", "e2", "org1", 30*time.Second)
	foreign := mk("b4", "e9", "org2", 2*time.Minute)
	for _, b := range []store.Backup{first, second, other, foreign} {
		if err := s.CreateBackup(ctx, b); err != nil {
			t.Fatalf("CreateBackup(%s): %v", b.ID, err)
		}
	}
	dup := mk("b1", "e2", "org1", time.Hour)
	if err := s.CreateBackup(ctx, dup); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("duplicate backup id: got %v, want ErrAlreadyExists", err)
	}

	got, err := s.ListBackups(ctx, "e1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "b2" || got[1].ID != "b1" {
		t.Fatalf("ListBackups(e1) = %v, want b2, b1 (newest first)", ids(got))
	}
	if g := got[1]; !g.Time.Equal(first.Time) || g.Trigger != "stop" || g.RunnerID != "r1" || g.OrganizationID != "org1" ||
		g.Files != 3 || g.Bytes != 30 || g.BytesNew != 10 || g.BytesReused != 20 || g.StoredBytes != 12 || g.DurationMS != 40 || g.FrozenMS != 5 ||
		!slices.Equal(g.Skipped, first.Skipped) {
		t.Errorf("stored backup = %+v, want %+v", g, first)
	}
	if g := got[0]; g.Previous != "b1" || g.Trigger != "manual" || g.Skipped != nil {
		t.Errorf("second backup = %+v", g)
	}
	if got, err := s.ListBackups(ctx, "none"); err != nil || len(got) != 0 {
		t.Errorf("ListBackups(none) = %v, %v; want nothing", ids(got), err)
	}
	org, err := s.ListOrganizationBackups(ctx, "org1")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"b2", "b3", "b1"}; !slices.Equal(ids(org), want) {
		t.Errorf("ListOrganizationBackups(org1) = %v, want %v", ids(org), want)
	}

	// The server's receive time orders them, not the runner's clock: a
	// backup taken by a clock behind ranks by when it was received.
	skewed := mk("b5", "e3", "org1", -10*time.Minute)
	skewed.ReceivedAt = base.Add(5 * time.Minute)
	earlier := mk("b6", "e3", "org1", 0)
	earlier.ReceivedAt = base
	for _, b := range []store.Backup{earlier, skewed} {
		if err := s.CreateBackup(ctx, b); err != nil {
			t.Fatalf("CreateBackup(%s): %v", b.ID, err)
		}
	}
	if got, _ := s.ListBackups(ctx, "e3"); !slices.Equal(ids(got), []string{"b5", "b6"}) ||
		!got[0].ReceivedAt.Equal(skewed.ReceivedAt) || !got[0].Time.Equal(skewed.Time) {
		t.Errorf("ListBackups(e3) = %v, want b5 (received last, taken by a clock behind) before b6, times kept", got)
	}
	if err := s.DeleteBackup(ctx, "b2"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBackup(ctx, "b2"); err != nil {
		t.Errorf("deleting a deleted backup: %v, want success", err)
	}
	if got, _ := s.ListBackups(ctx, "e1"); !slices.Equal(ids(got), []string{"b1"}) {
		t.Errorf("after delete: %v, want b1", ids(got))
	}
	if got, _ := s.ListOrganizationBackups(ctx, "org2"); !slices.Equal(ids(got), []string{"b4"}) {
		t.Errorf("other organization's backups: %v, want b4 untouched", ids(got))
	}
}

func ids(bs []store.Backup) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.ID)
	}
	return out
}

func testBackupKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	seed(t, s)
	if err := s.CreateOrganization(ctx, store.Organization{ID: "org2", Name: "second", CreatedAt: time.Now().Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	orgs, err := s.ListOrganizations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(orgs) != 2 || orgs[0].ID != "org1" || orgs[1].ID != "org2" || orgs[1].Name != "second" {
		t.Fatalf("ListOrganizations = %+v", orgs)
	}

	// Concurrent first uses all get the one key that was stored.
	const n = 8
	keys := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { keys[i], errs[i] = s.OrganizationBackupKey(ctx, "org1") })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("OrganizationBackupKey: %v", errs[i])
		}
		if len(keys[i]) != 32 || !slices.Equal(keys[i], keys[0]) {
			t.Fatalf("concurrent first uses got different keys (%d bytes vs %d)", len(keys[i]), len(keys[0]))
		}
	}
	again, err := s.OrganizationBackupKey(ctx, "org1")
	if err != nil || !slices.Equal(again, keys[0]) {
		t.Fatalf("the key changed on a later use (err %v)", err)
	}
	other, err := s.OrganizationBackupKey(ctx, "org2")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(other, keys[0]) {
		t.Fatal("two organizations share a backup key")
	}
	if _, err := s.OrganizationBackupKey(ctx, "no-such-org"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("key of an unknown organization: %v, want ErrNotFound", err)
	}
}

func testMoves(t *testing.T, s store.Store) {
	ctx := context.Background()
	at := time.Now().Truncate(time.Millisecond).UTC()
	m := store.Move{EnvironmentID: "e1", FromRunnerID: "r1", ToRunnerID: "r2", RequestedBy: "u1", RequestedAt: at, SpecVersion: 4, BackupGeneration: 2}
	if err := s.PutMove(ctx, m); err != nil {
		t.Fatal(err)
	}
	later := store.Move{EnvironmentID: "e2", FromRunnerID: "r1", ToRunnerID: "r3", RequestedAt: at.Add(time.Second)}
	if err := s.PutMove(ctx, later); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListMoves(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != m || got[1] != later {
		t.Fatalf("ListMoves = %+v, want %+v then %+v", got, m, later)
	}
	m.ToRunnerID, m.SpecVersion = "r4", 6
	if err := s.PutMove(ctx, m); err != nil {
		t.Fatalf("replacing a move: %v", err)
	}
	if got, _ := s.ListMoves(ctx); len(got) != 2 || got[0] != m {
		t.Fatalf("after replace: %+v, want %+v first", got, m)
	}
	for range 2 {
		if err := s.DeleteMove(ctx, "e1"); err != nil {
			t.Fatalf("DeleteMove: %v", err)
		}
	}
	if got, _ := s.ListMoves(ctx); len(got) != 1 || got[0] != later {
		t.Fatalf("after delete: %+v, want only %+v", got, later)
	}
}
