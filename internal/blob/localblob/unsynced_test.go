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

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/blobtest"
)

// fakeHost makes the store see machine id machine and boot id boot (the
// kernel's is one per boot) until the test ends.
func fakeHost(t *testing.T, machine, boot string) {
	t.Helper()
	dir := t.TempDir()
	m, b := filepath.Join(dir, "machine-id"), filepath.Join(dir, "boot_id")
	if err := os.WriteFile(m, []byte(machine+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte(boot+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	oldM, oldB := machineIDFile, bootIDFile
	machineIDFile, bootIDFile = []string{m}, b
	t.Cleanup(func() { machineIDFile, bootIDFile = oldM, oldB })
}

func markers(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(dir, unsyncedDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		if !strings.HasSuffix(d.Name(), ".epoch") {
			names = append(names, d.Name())
		}
	}
	return names
}

func batched(t *testing.T, dir, scope string) *Store {
	t.Helper()
	s, err := New(dir, nil, BatchedSync(scope))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A batched store leaves a durable marker before its first unsynced Put
// and removes it once a Sync made everything durable; a marker left by a
// boot of this machine that ended before its Sync (a host crash) is
// reported to a store of the same scope after the reboot, with the time
// since which objects may be damaged, and only to that scope, until
// cleared. The scope's epoch is made on the first look and stays.
func TestCrashMarkers(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "blobs")
	fakeHost(t, "aaaa", "b0001")
	s := batched(t, dir, "k1")
	if m := markers(t, dir); len(m) != 0 {
		t.Fatalf("markers before any Put: %v", m)
	}
	before := time.Now()
	st, err := s.CrashedWrites()
	if err != nil || len(st.Markers) != 0 || st.Foreign || st.Epoch.IsZero() || st.Epoch.After(time.Now()) {
		t.Fatalf("CrashedWrites of a new store: %+v, %v; want no markers and an epoch of now", st, err)
	}
	epoch := st.Epoch
	blobtest.Put(t, s, "chunks/a", []byte("one"))
	m := markers(t, dir)
	if len(m) != 1 || !strings.HasPrefix(m[0], "k1.aaaa.b0001.") {
		t.Fatalf("markers after an unsynced Put: %v, want one of scope k1, machine aaaa, boot b0001", m)
	}
	if st, err := s.CrashedWrites(); err != nil || len(st.Markers) != 0 || st.Foreign {
		t.Errorf("CrashedWrites in the same boot: %+v, %v; want nothing", st, err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if m := markers(t, dir); len(m) != 0 {
		t.Fatalf("markers after Sync: %v", m)
	}

	// Unsynced Puts, then the host goes down: the marker stays.
	blobtest.Put(t, s, "chunks/b", []byte("two"))
	fakeHost(t, "aaaa", "b0002")
	if st, err := batched(t, dir, "k2").CrashedWrites(); err != nil || len(st.Markers) != 0 || st.Foreign {
		t.Errorf("CrashedWrites of scope k2: %+v, %v; want nothing (another scope's crash)", st, err)
	}
	if plain, err := New(dir, nil); err != nil {
		t.Fatal(err)
	} else if _, err := plain.CrashedWrites(); err == nil {
		t.Error("CrashedWrites of a store without BatchedSync: no error")
	}
	after := batched(t, dir, "k1")
	st, err = after.CrashedWrites()
	if err != nil || len(st.Markers) != 1 || st.Foreign {
		t.Fatalf("CrashedWrites after the reboot: %+v, %v; want the marker", st, err)
	}
	if !st.Epoch.Equal(epoch) {
		t.Errorf("epoch moved: %v, was %v", st.Epoch, epoch)
	}
	if info, err := after.Stat(ctx, "chunks/b"); err != nil || info.ModTime.Before(st.Since) {
		t.Errorf("the unsynced object (%v, %v) is not covered by since %v", info.ModTime, err, st.Since)
	}
	if !st.Since.Before(before) {
		t.Errorf("since %v: want before the marker was written (%v), by the slack", st.Since, before)
	}
	for _, bad := range []string{"k2.aaaa.b0001.1-x", "k1.epoch", "../k1.x"} {
		if err := after.ClearCrashed([]string{bad}); err == nil {
			t.Errorf("ClearCrashed(%q) succeeded", bad)
		}
	}
	if err := after.ClearCrashed(st.Markers); err != nil {
		t.Fatal(err)
	}
	if st, err := after.CrashedWrites(); err != nil || len(st.Markers) != 0 {
		t.Errorf("CrashedWrites after ClearCrashed: %+v, %v", st, err)
	}
}

// A store on a file system that several hosts share (review REV-S9-1):
// another machine's marker may be a backup running there, so it is never
// reported as this machine's crash (nor cleared here), only as foreign.
func TestCrashMarkerOfAnotherMachine(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "blobs")
	fakeHost(t, "aaaa", "ba0a")
	a := batched(t, dir, "k1")
	blobtest.Put(t, a, "chunks/a", []byte("running on a")) // a's backup, not synced yet
	fakeHost(t, "bbbb", "bb0b")
	st, err := batched(t, dir, "k1").CrashedWrites()
	if err != nil || len(st.Markers) != 0 || !st.Foreign {
		t.Fatalf("CrashedWrites on machine b: %+v, %v; want a's marker as foreign, nothing to clear", st, err)
	}
	if m := markers(t, dir); len(m) != 1 {
		t.Errorf("markers: %v, want a's kept", m)
	}
}

// A Sync during which Puts are in flight does not vouch for them: the
// marker stays until a Sync that followed every Put.
func TestCrashMarkerKeptWhilePutsInFlight(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "blobs")
	s := batched(t, dir, "k1")
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

// A clock stepped back by more than half the slack while unsynced Puts
// go on (review REV-S9-6): a new marker covers what is written after, so
// a crash's window starts early enough; the Sync removes both.
func TestCrashMarkerAfterClockStepsBack(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "blobs")
	s := batched(t, dir, "k1")
	blobtest.Put(t, s, "chunks/a", []byte("one"))
	old := now
	now = func() time.Time { return old().Add(-crashSlack) }
	t.Cleanup(func() { now = old })
	blobtest.Put(t, s, "chunks/b", []byte("two"))
	if m := markers(t, dir); len(m) != 2 {
		t.Fatalf("markers after the clock went back: %v, want two", m)
	}
	blobtest.Put(t, s, "chunks/c", []byte("three"))
	if m := markers(t, dir); len(m) != 2 {
		t.Errorf("markers after another Put: %v, want still two", m)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if m := markers(t, dir); len(m) != 0 {
		t.Errorf("markers after Sync: %v", m)
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

// Quarantine moves an object aside (the key then holds none), and puts it
// back — unless the key holds another object by then, which stays — or
// drops it; an object a killed process left aside for over an hour is put
// back by the next New.
func TestQuarantine(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "blobs")
	s := batched(t, dir, "k1")
	blobtest.Put(t, s, "chunks/a", []byte("old"))

	q, err := s.Quarantine(ctx, "chunks/a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "chunks/a"); err == nil {
		t.Error("the key still holds the quarantined object")
	}
	if b, err := io.ReadAll(q); err != nil || string(b) != "old" {
		t.Errorf("quarantined content %q, %v", b, err)
	}
	if err := q.Restore(); err != nil {
		t.Fatal(err)
	}
	if got := blobtest.Read(t, s, "chunks/a", blob.Range{}); string(got) != "old" {
		t.Errorf("after Restore: %q", got)
	}

	q, err = s.Quarantine(ctx, "chunks/a")
	if err != nil {
		t.Fatal(err)
	}
	blobtest.Put(t, s, "chunks/a", []byte("new")) // stored again meanwhile
	if err := q.Restore(); err != nil {
		t.Fatal(err)
	}
	if got := blobtest.Read(t, s, "chunks/a", blob.Range{}); string(got) != "new" {
		t.Errorf("after Restore over a newer object: %q, want the newer kept", got)
	}

	q, err = s.Quarantine(ctx, "chunks/a")
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Drop(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "chunks/a"); err == nil {
		t.Error("the object is back after Drop")
	}
	if _, err := s.Quarantine(ctx, "chunks/a"); !blob.IsNotFound(err) {
		t.Errorf("Quarantine of a missing object: %v, want not found", err)
	}

	// A process killed while it held one: put back after an hour.
	blobtest.Put(t, s, "chunks/b", []byte("kept"))
	if _, err := s.Quarantine(ctx, "chunks/b"); err != nil {
		t.Fatal(err)
	}
	batched(t, dir, "k1") // too early: left aside
	if _, err := s.Stat(ctx, "chunks/b"); err == nil {
		t.Error("an object quarantined a moment ago was put back")
	}
	old := now
	now = func() time.Time { return old().Add(2 * staleTmp) }
	t.Cleanup(func() { now = old })
	batched(t, dir, "k1")
	if got := blobtest.Read(t, s, "chunks/b", blob.Range{}); string(got) != "kept" {
		t.Errorf("after New, an hour later: %q", got)
	}
}

// A quarantined object is put back through the store's root: a symlink
// planted in the directory meanwhile, where its parent was, does not lead
// it outside.
func TestQuarantinePutBackConfined(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "blobs")
	outside := t.TempDir()
	s := batched(t, dir, "k1")
	blobtest.Put(t, s, "chunks/ab/x", []byte("content"))
	q, err := s.Quarantine(ctx, "chunks/ab/x")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "chunks", "ab")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "chunks", "ab")); err != nil {
		t.Fatal(err)
	}
	if err := q.Restore(); err == nil {
		t.Error("Restore through a symlink leading out of the store succeeded")
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("the object was put outside the store: %v", ents)
	}
}
