package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/covedev/cove/internal/store"
	"github.com/covedev/cove/internal/store/sqlite"
	"github.com/covedev/cove/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "cove.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestReopenKeepsDataAndSkipsMigrations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cove.db")
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateOrganization(ctx, store.Organization{ID: "o", Name: "default"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = sqlite.Open(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if _, err := s.GetOrganizationByName(ctx, "default"); err != nil {
		t.Fatalf("data lost across reopen: %v", err)
	}
}
