package runner

import (
	"strings"
	"testing"

	"connectrpc.com/connect"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// TestBackupRefusedForGoodNotRetried (review REV-13): a report the server
// refuses for good (FailedPrecondition: its manifest is not in storage)
// is tried once, not three times and again at every pass.
func TestBackupRefusedForGoodNotRetried(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	srv.mu.Lock()
	srv.refuseCode = connect.CodeFailedPrecondition
	srv.mu.Unlock()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) {}) // another pass
	srv.mu.Lock()
	calls := srv.reportCalls
	srv.mu.Unlock()
	if calls != 1 {
		t.Fatalf("a report refused with FailedPrecondition was sent %d times, want once", calls)
	}
}

// TestNothingChangedSaidForAMove (review REV-12): asked for a backup (a
// move's generation) of a stopped environment that did not run since its
// last backup, the runner takes none and says so in the progress, naming
// that backup, which the server reads as "nothing changed since".
func TestNothingChangedSaidForAMove(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	got := srv.backups()
	if len(got) != 1 {
		t.Fatalf("reported %v, want the stop's backup", got)
	}
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.BackupGeneration++ })
	if n := len(srv.backups()); n != 1 {
		t.Fatalf("%d backups reported, want no new one", n)
	}
	last := c.srv.last[env.Id]
	p := last.GetBackupProgress()
	if last.GetObservedBackupGeneration() != env.Spec.BackupGeneration || p.GetOperation() != "backup" ||
		p.GetState().GetPhase() != subReady || p.GetState().GetMessage() != nothingChangedPrefix+got[0].GetId() ||
		!strings.HasPrefix(nothingChangedPrefix, "skipped: nothing changed since ") {
		t.Fatalf("status: observed generation %d (want %d), progress %v; want READY %q", last.GetObservedBackupGeneration(),
			env.Spec.BackupGeneration, p, nothingChangedPrefix+got[0].GetId())
	}
}
