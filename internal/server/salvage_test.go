package server_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// rescheduledOffR1 is the salvage tests' start: alice's environment ran on
// r1 (backup b1 recorded), r1 was lost for longer than RescheduleAfter,
// the environment was rescheduled to r2 from b1 and runs there; r1 is
// back (a heartbeat). r1 holds a release of it.
func rescheduledOffR1(t *testing.T, w *backupWorld) *covev1.Environment {
	t.Helper()
	env := w.running(t, w.alice, "work")
	w.running(t, w.alice, "filler") // on r2
	if env.GetMetadata().GetRunnerId() != w.id1 {
		t.Fatalf("work on %s", env.GetMetadata().GetRunnerId())
	}
	if err := w.report(w.r1, w.backup(env, 1, "periodic")); err != nil {
		t.Fatal(err)
	}
	w.lose(t, 2*time.Hour+time.Minute)
	// The server's own loop may mark r2 INACTIVE from a runner list read
	// before r2's heartbeat (a lost update in liveness, not what these
	// tests are about): r2 beats again until a pass has moved it there.
	for i := 0; i < 5 && w.get(t, w.alice, env.Id).GetMetadata().GetRunnerId() == w.id1; i++ {
		w.heartbeat(t, w.r2)
		w.pass(t)
	}
	wantMovedTo(t, w.get(t, w.alice, env.Id), w.id2, env.Id+"/b1", 1)
	w.status(t, w.r2, env.Id, phRunning, nil)
	w.heartbeat(t, w.r1)
	return w.get(t, w.alice, env.Id)
}

// salvage is runner r's salvage report of env, named n.
func (w *backupWorld) salvage(env *covev1.Environment, n string) *covev1.Backup {
	b := w.backup(env, 0, "salvage")
	b.Id, b.Files = env.Id+"/"+n, 7
	return b
}

func (w *backupWorld) backupsOf(t *testing.T, id string) map[string]*covev1.Backup {
	t.Helper()
	bs, err := w.list(t, w.alice, id)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*covev1.Backup{}
	for _, b := range bs {
		out[b.Id] = b
	}
	return out
}

func salvagedWarning(env *covev1.Environment, id string) bool {
	for _, w := range env.GetStatus().GetWarnings() {
		if strings.HasPrefix(w, "salvaged: ") && strings.Contains(w, id) {
			return true
		}
	}
	return false
}

// TestSalvageFromAReleasedRunner: the runner an environment was
// rescheduled off is told to salvage its copy, gets backup access for it,
// and its one salvage is recorded and listed with a note — but it is not
// the environment's latest backup, nor what a restore without --backup,
// the next move or reschedule starts from; `cove env get` says it exists
// until the user restores; the user can roll forward to it by name.
func TestSalvageFromAReleasedRunner(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := rescheduledOffR1(t, w)
	rel := releaseOn(t, w.r1, env.Id)
	wantReleaseCopy(t, rel, w.id1)
	if !rel.GetSpec().GetSalvage() {
		t.Fatal("the released copy of an environment that lives on does not ask for a salvage")
	}
	if a, err := access(w.r1, env.Id); err != nil || len(a.GetKey()) == 0 {
		t.Fatalf("backup access for the salvage: %v", err)
	}
	s := w.salvage(env, "salvaged-1")
	if err := w.report(w.r1, s); err != nil {
		t.Fatalf("salvage report: %v", err)
	}
	if err := w.reportOnly(w.r1, s); err != nil { // a retry (the answer was lost)
		t.Fatalf("the same salvage reported again: %v", err)
	}
	got := w.get(t, w.alice, env.Id)
	if lb := got.GetStatus().GetLastBackup().GetId(); lb != env.Id+"/b1" {
		t.Fatalf("last backup after the salvage: %q, want %s/b1 (the salvage is not the latest)", lb, env.Id)
	}
	if !salvagedWarning(got, s.Id) {
		t.Fatalf("no salvage warning in the status: %q", got.GetStatus().GetWarnings())
	}
	bs := w.backupsOf(t, env.Id)
	if b := bs[s.Id]; b == nil || b.Trigger != "salvage" || b.RunnerId != w.id1 || !strings.Contains(b.Note, `"r1"`) || !strings.Contains(b.Note, "newer than the backup it was moved from") {
		t.Fatalf("salvage listed as %v", b)
	}
	if b := bs[env.Id+"/b1"]; b == nil || b.Note != "" {
		t.Fatalf("b1 listed as %v", b)
	}
	// The released copy no longer asks for one; access is over.
	if rel := releaseOn(t, w.r1, env.Id); rel.GetSpec().GetSalvage() {
		t.Fatal("the released copy still asks for a salvage once one is recorded")
	}
	if _, err := access(w.r1, env.Id); err == nil {
		t.Fatal("backup access for a second salvage")
	}

	// r2's reports keep the warning; its next backup is the latest.
	w.status(t, w.r2, env.Id, phRunning, nil)
	w.advance(time.Minute)
	if err := w.report(w.r2, w.backup(env, 2, "periodic")); err != nil {
		t.Fatal(err)
	}
	got = w.get(t, w.alice, env.Id)
	if lb := got.GetStatus().GetLastBackup().GetId(); lb != env.Id+"/b2" || !salvagedWarning(got, s.Id) {
		t.Fatalf("after r2's report and backup: last %q, warnings %q", lb, got.GetStatus().GetWarnings())
	}

	// A restore without --backup is not the salvage; naming it is.
	resp, err := w.alice.envs.RestoreEnvironment(context.Background(), connect.NewRequest(&covev1.RestoreEnvironmentRequest{Id: env.Id}))
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.Msg.Environment.GetSpec().GetRestore(); r.GetBackupId() != env.Id+"/b2" {
		t.Fatalf("restore without --backup picked %q, want b2", r.GetBackupId())
	}
	if salvagedWarning(resp.Msg.Environment, s.Id) {
		t.Fatal("the salvage warning outlived the user's restore")
	}
	resp, err = w.alice.envs.RestoreEnvironment(context.Background(), connect.NewRequest(&covev1.RestoreEnvironmentRequest{Id: env.Id, BackupId: s.Id}))
	if err != nil {
		t.Fatalf("roll forward to the salvage: %v", err)
	}
	if r := resp.Msg.Environment.GetSpec().GetRestore(); r.GetBackupId() != s.Id || !r.GetBackupFirst() {
		t.Fatalf("roll forward: restore %v", r)
	}
}

// TestSalvageRefusals performs what a released runner might try beyond
// its one salvage, and asserts each is refused and changes nothing:
// reporting another kind of backup, a salvage under another record's id
// (overwrite), a second salvage, a salvage by the environment's own
// runner, and anything after its release ended.
func TestSalvageRefusals(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := rescheduledOffR1(t, w)
	if err := w.report(w.r2, w.backup(env, 2, "periodic")); err != nil {
		t.Fatal(err)
	}
	before := w.get(t, w.alice, env.Id)

	// Not a salvage: refused as before (REV-1), not recorded.
	p := w.backup(env, 9, "periodic")
	if err := w.report(w.r1, p); code(err) != connect.CodeNotFound {
		t.Fatalf("released runner's periodic backup: %v, want NotFound", err)
	}
	// A salvage under r2's record's id: refused, r2's record unchanged.
	over := w.salvage(env, "b2")
	if err := w.report(w.r1, over); code(err) != connect.CodeAlreadyExists {
		t.Fatalf("salvage over b2: %v, want AlreadyExists", err)
	}
	// The environment's own runner cannot report a salvage.
	if err := w.report(w.r2, w.salvage(env, "own")); code(err) != connect.CodeInvalidArgument {
		t.Fatalf("assigned runner's salvage: %v, want InvalidArgument", err)
	}
	// Another environment's id, hostile values: checked like any report.
	other := w.salvage(env, "x")
	other.Id = "someone-else/x"
	if err := w.report(w.r1, other); code(err) != connect.CodeInvalidArgument {
		t.Fatalf("salvage named outside the environment: %v, want InvalidArgument", err)
	}
	neg := w.salvage(env, "neg")
	neg.Files = -1
	if err := w.report(w.r1, neg); code(err) != connect.CodeInvalidArgument {
		t.Fatalf("salvage with negative files: %v, want InvalidArgument", err)
	}
	// No manifest in storage: not recorded.
	if err := w.reportOnly(w.r1, w.salvage(env, "nomanifest")); code(err) != connect.CodeFailedPrecondition {
		t.Fatalf("salvage without a manifest: %v, want FailedPrecondition", err)
	}
	bs := w.backupsOf(t, env.Id)
	if len(bs) != 2 || bs[env.Id+"/b2"].GetTrigger() != "periodic" || bs[env.Id+"/b2"].GetRunnerId() != w.id2 {
		t.Fatalf("records after the refusals: %v", bs)
	}

	// One salvage; a second under another id is refused.
	if err := w.report(w.r1, w.salvage(env, "s1")); err != nil {
		t.Fatal(err)
	}
	if err := w.report(w.r1, w.salvage(env, "s2")); code(err) != connect.CodeAlreadyExists {
		t.Fatalf("second salvage: %v, want AlreadyExists", err)
	}
	bs = w.backupsOf(t, env.Id)
	if len(bs) != 3 || bs[env.Id+"/s1"] == nil {
		t.Fatalf("records after two salvages: %v", bs)
	}
	got := w.get(t, w.alice, env.Id)
	if got.GetStatus().GetLastBackup().GetId() != before.GetStatus().GetLastBackup().GetId() || got.GetMetadata().GetRunnerId() != w.id2 {
		t.Fatalf("the salvage changed the latest backup or the runner: %v", got)
	}

	// The release ends: nothing more.
	if _, err := w.r1.ReportStatus(context.Background(), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id,
		Status: &covev1.EnvironmentStatus{Phase: phDeleted}})); err != nil {
		t.Fatal(err)
	}
	if _, err := access(w.r1, env.Id); code(err) != connect.CodeNotFound {
		t.Fatalf("backup access after the release ended: %v, want NotFound", err)
	}
	if err := w.report(w.r1, w.salvage(env, "s3")); code(err) != connect.CodeNotFound {
		t.Fatalf("salvage after the release ended: %v, want NotFound", err)
	}
	if n := len(w.backupsOf(t, env.Id)); n != 3 {
		t.Fatalf("%d records after the release ended, want 3", n)
	}
}

// TestSalvageBoundUnderConcurrentReports: a released runner sending
// several salvages at once still gets exactly one recorded.
func TestSalvageBoundUnderConcurrentReports(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := rescheduledOffR1(t, w)
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		b := w.salvage(env, fmt.Sprintf("c%d", i))
		if err := w.blobs.Put(context.Background(), "manifests/"+b.Id, strings.NewReader("m"), 1); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w.reportOnly(w.r1, b)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case code(err) != connect.CodeAlreadyExists:
			t.Errorf("concurrent salvage: %v", err)
		}
	}
	salvages := 0
	for _, b := range w.backupsOf(t, env.Id) {
		if b.Trigger == "salvage" {
			salvages++
		}
	}
	if ok != 1 || salvages != 1 {
		t.Fatalf("%d salvage reports accepted, %d recorded; want 1 and 1", ok, salvages)
	}
}

// TestNoSalvageOfDeletedEnvironments: an environment deleted while its
// runner was lost, and one deleted by its owner after it moved off a lost
// runner: the runner that comes back is told to delete its copy without a
// salvage, and is refused one if it asks.
func TestNoSalvageOfDeletedEnvironments(t *testing.T) {
	t.Run("deleted while the runner was lost", func(t *testing.T) {
		w := newBackupWorld(t, nil)
		env := w.running(t, w.alice, "work")
		if _, err := w.alice.envs.DeleteEnvironment(context.Background(), connect.NewRequest(&covev1.DeleteEnvironmentRequest{Id: env.Id})); err != nil {
			t.Fatal(err)
		}
		w.lose(t, 2*time.Hour+time.Minute)
		w.pass(t)
		w.heartbeat(t, w.r1)
		wantNoSalvage(t, w, env)
	})
	t.Run("moved, then deleted by its owner", func(t *testing.T) {
		w := newBackupWorld(t, nil)
		env := rescheduledOffR1(t, w)
		if _, err := w.alice.envs.DeleteEnvironment(context.Background(), connect.NewRequest(&covev1.DeleteEnvironmentRequest{Id: env.Id})); err != nil {
			t.Fatal(err)
		}
		wantNoSalvage(t, w, env)
	})
}

func wantNoSalvage(t *testing.T, w *backupWorld, env *covev1.Environment) {
	t.Helper()
	rel := releaseOn(t, w.r1, env.Id)
	wantReleaseCopy(t, rel, w.id1)
	if rel.GetSpec().GetSalvage() {
		t.Fatal("the released copy of a deleted environment asks for a salvage")
	}
	if _, err := access(w.r1, env.Id); code(err) != connect.CodeNotFound {
		t.Fatalf("backup access for a deleted environment's copy: %v, want NotFound", err)
	}
	if err := w.report(w.r1, w.salvage(env, "s")); code(err) != connect.CodeNotFound {
		t.Fatalf("salvage of a deleted environment: %v, want NotFound", err)
	}
	bs, err := w.store.ListBackups(context.Background(), env.Id)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if b.Trigger == "salvage" {
			t.Fatalf("salvage recorded: %v", b)
		}
	}
}

// TestSalvageFieldIsTheServers: a user cannot set spec.salvage.
func TestSalvageFieldIsTheServers(t *testing.T) {
	w := newBackupWorld(t, nil)
	spec := gitSpec("https://example.com/repo.git")
	spec.Salvage = true
	if _, err := w.alice.create("work", spec); code(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "spec.salvage") {
		t.Fatalf("create with spec.salvage: %v, want InvalidArgument naming it", err)
	}
}

// TestMoveBackToARunnerHoldingACopy: the environment is moved back to
// the runner it was rescheduled off while that runner still holds its
// copy (the release not carried out: a salvage failing, say). The restore
// there backs the copy up first, so the restore does not replace work in
// no backup; the release ends.
func TestMoveBackToARunnerHoldingACopy(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := rescheduledOffR1(t, w)
	if _, err := w.start(w.alice, "work", "r1"); err != nil {
		t.Fatal(err)
	}
	if err := w.report(w.r2, w.backup(env, 2, "stop")); err != nil {
		t.Fatal(err)
	}
	w.status(t, w.r2, env.Id, phStopped, nil)
	w.pass(t)
	got := w.get(t, w.alice, env.Id)
	if r := got.GetSpec().GetRestore(); got.GetMetadata().GetRunnerId() != w.id1 || r.GetBackupId() != env.Id+"/b2" || !r.GetBackupFirst() {
		t.Fatalf("moved back: on %s, restore %v; want r1, b2, its copy backed up first", got.GetMetadata().GetRunnerId(), r)
	}
	if ids := w.releases(t, w.id1); len(ids) != 0 {
		t.Fatalf("r1's releases after the move back: %v", ids)
	}
	// A move to a runner that holds no copy (r2 deleted its own, ending
	// its release) does not ask for one.
	if _, err := w.r2.ReportStatus(context.Background(), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id,
		Status: &covev1.EnvironmentStatus{Phase: phDeleted}})); err != nil {
		t.Fatal(err)
	}
	if ids := w.releases(t, w.id2); len(ids) != 0 {
		t.Fatalf("r2's releases after its DELETED report: %v", ids)
	}
	w.status(t, w.r1, env.Id, phRunning, nil)
	if _, err := w.start(w.alice, "work", "r2"); err != nil {
		t.Fatal(err)
	}
	w.advance(time.Second)
	if err := w.report(w.r1, w.backup(env, 3, "stop")); err != nil {
		t.Fatal(err)
	}
	w.status(t, w.r1, env.Id, phStopped, nil)
	w.pass(t)
	got = w.get(t, w.alice, env.Id)
	if r := got.GetSpec().GetRestore(); got.GetMetadata().GetRunnerId() != w.id2 || r.GetBackupId() != env.Id+"/b3" || r.GetBackupFirst() {
		t.Fatalf("moved to r2: on %s, restore %v; want r2, b3, no backup first", got.GetMetadata().GetRunnerId(), r)
	}
}

// TestNoSalvageFromARunnerItNeverRanOn (review REV-S8-3): an environment
// that never ran on r1 (r1 was lost before it started there) is created
// afresh on r2; when r1 returns its copy holds none of the user's work, so
// r1 is not asked for a salvage, gets no backup access and cannot have a
// backup of its choosing listed and recommended as "your newer work".
func TestNoSalvageFromARunnerItNeverRanOn(t *testing.T) {
	w := newBackupWorld(t, nil)
	env, err := w.alice.create("work", gitSpec("https://example.com/repo.git"))
	if err != nil {
		t.Fatal(err)
	}
	if env.GetMetadata().GetRunnerId() != w.id1 {
		t.Fatalf("work on %s, want r1", env.GetMetadata().GetRunnerId())
	}
	w.lose(t, 2*time.Hour+time.Minute)
	for i := 0; i < 5 && w.get(t, w.alice, env.Id).GetMetadata().GetRunnerId() == w.id1; i++ {
		w.heartbeat(t, w.r2)
		w.pass(t)
	}
	if got := w.get(t, w.alice, env.Id); got.GetMetadata().GetRunnerId() != w.id2 || got.GetSpec().GetRestore() != nil {
		t.Fatalf("not created afresh on r2: on %s, restore %v", got.GetMetadata().GetRunnerId(), got.GetSpec().GetRestore())
	}
	w.heartbeat(t, w.r1)
	rel := releaseOn(t, w.r1, env.Id)
	wantReleaseCopy(t, rel, w.id1)
	if rel.GetSpec().GetSalvage() {
		t.Fatal("a runner the environment never ran on is asked to salvage its copy")
	}
	if _, err := access(w.r1, env.Id); err == nil {
		t.Fatal("backup access for a salvage of a copy that never ran")
	}
	if err := w.report(w.r1, w.salvage(env, "planted")); err == nil {
		t.Fatal("a salvage from a runner the environment never ran on was recorded")
	}
	if b := w.backupsOf(t, env.Id)[env.Id+"/planted"]; b != nil {
		t.Fatalf("planted backup listed: %v", b)
	}
	if got := w.get(t, w.alice, env.Id); len(got.GetStatus().GetWarnings()) > 0 && strings.Contains(strings.Join(got.GetStatus().GetWarnings(), "\n"), "salvaged") {
		t.Fatalf("salvage warning: %q", got.GetStatus().GetWarnings())
	}
}

// TestFailingSalvageLoggedOnceInAWhile: a released runner reporting its
// failing salvage over and over gets one warning line in the server's log
// per environment per 10 minutes, not one per report.
func TestFailingSalvageLoggedOnceInAWhile(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := rescheduledOffR1(t, w)
	failing := func() {
		t.Helper()
		if _, err := w.r1.ReportStatus(context.Background(), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id,
			Status: &covev1.EnvironmentStatus{Phase: phStopped, BackupProgress: &covev1.BackupProgress{Operation: "backup",
				State: &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_FAILED, Message: "storage unreachable"}}}})); err != nil {
			t.Fatal(err)
		}
	}
	const line = "could not back up (salvage) yet"
	for range 50 {
		failing()
	}
	if n := strings.Count(w.log.String(), line); n != 1 {
		t.Fatalf("50 failing reports logged %d times, want once", n)
	}
	w.advance(10 * time.Minute)
	w.heartbeat(t, w.r1)
	failing()
	failing()
	if n := strings.Count(w.log.String(), line); n != 2 {
		t.Fatalf("after 10 minutes: logged %d times, want twice", n)
	}
}
