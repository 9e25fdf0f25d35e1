package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/covedev/cove/internal/store"
)

func testReleases(t *testing.T, s store.Store) {
	ctx := context.Background()
	at := time.Now().Truncate(time.Millisecond).UTC()
	first := store.Release{EnvironmentID: "e1", RunnerID: "r1", CreatedAt: at, Ran: true}
	second := store.Release{EnvironmentID: "e2", RunnerID: "r1", CreatedAt: at.Add(time.Second), Ran: true}
	other := store.Release{EnvironmentID: "e1", RunnerID: "r2", CreatedAt: at}
	changes := s.Changes(ctx)
	for _, r := range []store.Release{second, first, other} {
		if err := s.PutRelease(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	<-changes // PutRelease wakes the runners' watches (a hang here fails by the test timeout)
	again := first
	again.CreatedAt, again.Ran = at.Add(time.Hour), false
	if err := s.PutRelease(ctx, again); err != nil {
		t.Fatalf("recording a release twice: %v", err)
	}
	got, err := s.ListReleases(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != first || got[1] != second {
		t.Fatalf("ListReleases(r1) = %+v, want %+v then %+v", got, first, second)
	}
	if r, err := s.GetRelease(ctx, "e1", "r2"); err != nil || r != other {
		t.Fatalf("GetRelease(e1, r2) = %+v, %v; want %+v", r, err, other)
	}
	if _, err := s.GetRelease(ctx, "e2", "r2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetRelease of none: %v, want ErrNotFound", err)
	}
	for range 2 {
		if err := s.DeleteRelease(ctx, "e1", "r1"); err != nil {
			t.Fatalf("DeleteRelease: %v", err)
		}
	}
	if got, _ := s.ListReleases(ctx, "r1"); len(got) != 1 || got[0] != second {
		t.Fatalf("after delete: %+v, want only %+v", got, second)
	}
	if got, _ := s.ListReleases(ctx, "r2"); len(got) != 1 || got[0] != other {
		t.Fatalf("another runner's release: %+v, want %+v", got, other)
	}
}
