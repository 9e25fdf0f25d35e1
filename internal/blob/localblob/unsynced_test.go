package localblob

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/blob/blobtest"
)

// fakeBoot makes the store see boot id (the kernel's is one per boot)
// until the test ends.
func fakeBoot(t *testing.T, id string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(f, []byte(id+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := bootIDFile
	bootIDFile = f
	t.Cleanup(func() { bootIDFile = old })
}

func markers(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(dir, unsyncedDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}

// A batched store leaves a durable marker before its first unsynced Put
// and removes it once a Sync made everything durable; a marker left by a
// boot that ended before its Sync (a host crash) is reported to a store of
// the same scope after the reboot, with the time since which objects may
// be damaged, and only to that scope, until cleared.
func TestCrashMarkers(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "blobs")
	fakeBoot(t, "boot-one")
	s, err := New(dir, nil, BatchedSync("k1"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if m := markers(t, dir); len(m) != 0 {
		t.Fatalf("markers before any Put: %v", m)
	}
	before := time.Now()
	blobtest.Put(t, s, "chunks/a", []byte("one"))
	m := markers(t, dir)
	if len(m) != 1 || !strings.HasPrefix(m[0], "k1.boot-one-") {
		t.Fatalf("markers after an unsynced Put: %v, want one of scope k1, boot boot-one", m)
	}
	if got, _, err := s.CrashedWrites(); err != nil || len(got) != 0 {
		t.Errorf("CrashedWrites in the same boot: %v, %v; want none", got, err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if m := markers(t, dir); len(m) != 0 {
		t.Fatalf("markers after Sync: %v", m)
	}

	// Unsynced Puts, then the host goes down: the marker stays.
	blobtest.Put(t, s, "chunks/b", []byte("two"))
	fakeBoot(t, "boot-two")
	other, err := New(dir, nil, BatchedSync("k2"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := other.CrashedWrites(); err != nil || len(got) != 0 {
		t.Errorf("CrashedWrites of scope k2: %v, %v; want none (another scope's crash)", got, err)
	}
	other.Close()
	if plain, err := New(dir, nil); err != nil {
		t.Fatal(err)
	} else if got, _, err := plain.CrashedWrites(); err != nil || len(got) != 0 {
		t.Errorf("CrashedWrites of a store without BatchedSync: %v, %v; want none", got, err)
	}
	after, err := New(dir, nil, BatchedSync("k1"))
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	got, since, err := after.CrashedWrites()
	if err != nil || len(got) != 1 {
		t.Fatalf("CrashedWrites after the reboot: %v, %v; want the marker", got, err)
	}
	if info, err := after.Stat(ctx, "chunks/b"); err != nil || info.ModTime.Before(since) {
		t.Errorf("the unsynced object (%v, %v) is not covered by since %v", info.ModTime, err, since)
	}
	if !since.Before(before) {
		t.Errorf("since %v: want before the marker was written (%v), by the slack", since, before)
	}
	if err := after.ClearCrashed([]string{"k2.boot-one-1-x"}); err == nil {
		t.Error("ClearCrashed of another scope's marker succeeded")
	}
	if err := after.ClearCrashed(got); err != nil {
		t.Fatal(err)
	}
	if got, _, err := after.CrashedWrites(); err != nil || len(got) != 0 {
		t.Errorf("CrashedWrites after ClearCrashed: %v, %v", got, err)
	}
}

// A Sync during which Puts are in flight does not vouch for them: the
// marker stays until a Sync that followed every Put.
func TestCrashMarkerKeptWhilePutsInFlight(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "blobs")
	s, err := New(dir, nil, BatchedSync("k1"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.Put(ctx, "chunks/slow", pr, 4); err != nil {
			t.Errorf("Put: %v", err)
		}
	}()
	pw.Write([]byte("ab")) // returns once the Put read it: the Put is in flight
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if m := markers(t, dir); len(m) != 1 {
		t.Errorf("markers after a Sync with a Put in flight: %v, want it kept", m)
	}
	pw.Write([]byte("cd"))
	pw.Close()
	wg.Wait()
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if m := markers(t, dir); len(m) != 0 {
		t.Errorf("markers after a Sync that followed every Put: %v", m)
	}
}

func TestBatchedSyncScope(t *testing.T) {
	for _, scope := range []string{"", "a/b", "../x", "a.b", strings.Repeat("a", 65)} {
		if s, err := New(filepath.Join(t.TempDir(), "blobs"), nil, BatchedSync(scope)); err == nil {
			s.Close()
			t.Errorf("scope %q accepted", scope)
		}
	}
}
