package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/covedev/cove/internal/store"
)

// testTokens: listing, lookup by id, revoking a token with what it
// created (and nothing of another user's), expiry cleanup.
func testTokens(t *testing.T, s store.Store) {
	ctx := context.Background()
	u := seed(t, s)
	if err := s.CreateUser(ctx, store.User{ID: "u2", OrganizationID: "org1", Name: "bob", Role: store.RoleMember}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Millisecond)
	mk := func(id, user, parent string, created time.Time, expires time.Time) {
		t.Helper()
		if err := s.CreateToken(ctx, store.Token{ID: id, UserID: user, Name: "n-" + id, Hash: "h-" + id, ParentID: parent, CreatedAt: created, ExpiresAt: expires}); err != nil {
			t.Fatal(err)
		}
	}
	mk("root", u.ID, "", now, time.Time{})
	mk("child", u.ID, "root", now.Add(time.Second), now.Add(time.Hour))
	mk("grandchild", u.ID, "child", now.Add(2*time.Second), now.Add(time.Minute))
	mk("sibling", u.ID, "", now.Add(3*time.Second), time.Time{})
	mk("old", u.ID, "", now.Add(4*time.Second), now.Add(-time.Minute))
	mk("bobs", "u2", "", now, time.Time{})

	got, err := s.GetToken(ctx, "child")
	if err != nil || got.ParentID != "root" || got.UserID != u.ID || !got.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("GetToken = %+v, %v", got, err)
	}
	if _, err := s.GetToken(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetToken(nope) = %v", err)
	}
	list, err := s.ListTokens(ctx, u.ID)
	if err != nil || len(list) != 5 || list[0].ID != "root" || list[4].ID != "old" {
		t.Fatalf("ListTokens = %+v, %v", list, err)
	}
	// Another user's token is not found for this user, and stays.
	if _, err := s.DeleteToken(ctx, u.ID, "bobs"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete another user's token: %v", err)
	}
	ids, err := s.DeleteToken(ctx, u.ID, "root")
	if err != nil || len(ids) != 3 || ids[0] != "root" || !slices.Contains(ids, "child") || !slices.Contains(ids, "grandchild") {
		t.Fatalf("DeleteToken(root) = %v, %v; want root and what it created", ids, err)
	}
	for _, h := range []string{"h-root", "h-child", "h-grandchild"} {
		if _, err := s.GetTokenByHash(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("revoked token %s still found: %v", h, err)
		}
	}
	if err := s.DeleteExpiredTokens(ctx, now); err != nil {
		t.Fatal(err)
	}
	list, _ = s.ListTokens(ctx, u.ID)
	if len(list) != 1 || list[0].ID != "sibling" {
		t.Fatalf("after revoking root and deleting expired ones: %+v", list)
	}
	if _, err := s.GetTokenByHash(ctx, "h-bobs"); err != nil {
		t.Fatalf("bob's token: %v", err)
	}
}

// testRunnerTokens: rotation through a pending token, revocation, removal.
func testRunnerTokens(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.CreateJoinToken(ctx, store.JoinToken{Hash: "j", CreatedBy: "u1", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.JoinRunner(ctx, "j", newRunner("r1", "old"), time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRunnerNextToken(ctx, "r1", "lost"); err != nil {
		t.Fatal(err)
	}
	// A second rotation replaces the pending token (the first answer was
	// lost); the current one still works meanwhile.
	if err := s.SetRunnerNextToken(ctx, "r1", "new"); err != nil {
		t.Fatal(err)
	}
	if r, err := s.GetRunnerByTokenHash(ctx, "old"); err != nil || r.ID != "r1" {
		t.Fatalf("current token while a rotation is pending: %+v %v", r, err)
	}
	if _, err := s.GetRunnerByTokenHash(ctx, "lost"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("replaced pending token: %v", err)
	}
	if r, err := s.GetRunnerByTokenHash(ctx, "new"); err != nil || r.ID != "r1" || r.TokenHash != "new" {
		t.Fatalf("pending token: %+v %v", r, err)
	}
	if _, err := s.GetRunnerByTokenHash(ctx, "old"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old token after the new one was used: %v", err)
	}
	if r, err := s.GetRunnerByTokenHash(ctx, "new"); err != nil || r.ID != "r1" {
		t.Fatalf("new token, second use: %+v %v", r, err)
	}
	if _, err := s.GetRunnerByTokenHash(ctx, ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("empty hash: %v", err)
	}
	// The first uses of a new token come together (a runner's heartbeat and
	// watch start at once): every one of them is let in.
	if err := s.SetRunnerNextToken(ctx, "r1", "together"); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			r, err := s.GetRunnerByTokenHash(ctx, "together")
			if err == nil && r.ID != "r1" {
				err = fmt.Errorf("got runner %q", r.ID)
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent first use of a rotated token: %v", err)
		}
	}
	if err := s.SetRunnerNextToken(ctx, "r1", "next"); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeRunnerTokens(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"new", "next"} {
		if _, err := s.GetRunnerByTokenHash(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("token %s after revocation: %v", h, err)
		}
	}
	if _, err := s.GetRunner(ctx, "r1"); err != nil {
		t.Fatalf("revocation removed the record: %v", err)
	}
	if err := s.DeleteRunner(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetRunner(ctx, "r1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted runner: %v", err)
	}
	for _, err := range []error{s.DeleteRunner(ctx, "r1"), s.SetRunnerNextToken(ctx, "r1", "x"), s.RevokeRunnerTokens(ctx, "r1")} {
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown runner: %v", err)
		}
	}
}
