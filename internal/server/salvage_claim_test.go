package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/blob"
)

// TestSalvageCannotClaimTheLiveRunnersBackup performs the attack: the
// released runner r1 (compromised: it holds bucket credentials) sees the
// manifest r2 just wrote for its periodic backup and, before r2 reports
// it, reports that id as its own salvage. r2's report then must still
// make it r2's record and the environment's latest backup — not a
// salvage nobody restores by default, listed as r1's copy, with a warning
// telling the user to restore it.
func TestSalvageCannotClaimTheLiveRunnersBackup(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := rescheduledOffR1(t, w)
	w.advance(time.Minute)

	live := w.backup(env, 2, "periodic") // r2's backup: its manifest is stored, not reported yet
	key := "manifests/" + live.Id
	if err := w.blobs.Put(context.Background(), key, strings.NewReader("manifest"), int64(len("manifest"))); err != nil {
		t.Fatal(err)
	}
	if _, err := w.blobs.Stat(context.Background(), key); err != nil || blob.ValidateKey(key) != nil {
		t.Fatalf("r2's manifest: %v", err)
	}
	claim := w.salvage(env, "b2") // r1 names r2's manifest as its salvage, first
	if err := w.reportOnly(w.r1, claim); err != nil {
		t.Logf("r1's claim refused outright: %v", err)
	}
	if err := w.reportOnly(w.r2, live); err != nil {
		t.Fatalf("r2's report of its own backup: %v", err)
	}

	got := w.get(t, w.alice, env.Id)
	if lb := got.GetStatus().GetLastBackup().GetId(); lb != live.Id {
		t.Fatalf("latest backup after r2 reported %s: %q (r1's claim kept it from being the latest)", live.Id, lb)
	}
	if salvagedWarning(got, live.Id) {
		t.Fatalf("the status tells the user %s is a salvaged copy: %q", live.Id, got.GetStatus().GetWarnings())
	}
	b := w.backupsOf(t, env.Id)[live.Id]
	if b == nil || b.GetTrigger() != "periodic" || b.GetRunnerId() != w.id2 || b.GetNote() != "" || b.GetFiles() != live.GetFiles() {
		t.Fatalf("%s listed as %v; want r2's periodic backup as r2 reported it", live.Id, b)
	}
	// r1 retrying its claim changes nothing.
	if err := w.reportOnly(w.r1, claim); err == nil {
		t.Fatal("r1's claim of r2's recorded backup accepted")
	}
	if b := w.backupsOf(t, env.Id)[live.Id]; b.GetTrigger() != "periodic" || b.GetRunnerId() != w.id2 {
		t.Fatalf("after r1's retry: %v", b)
	}
}
