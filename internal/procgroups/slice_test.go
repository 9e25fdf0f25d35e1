package procgroups

import (
	"os/exec"
	"testing"

	"github.com/covedev/cove/internal/testutil"
)

// SetSlice sets every thread's slice, and 0 gives the kernel's default
// back; a process that exited is ESRCH or a missing /proc entry, which
// callers ignore.
func TestSetSlice(t *testing.T) {
	testutil.RequireRoot(t, "it changes another process's scheduling attributes")
	if !customSlices(t) {
		t.Skip("this kernel does not keep a time slice asked for (before Linux 6.12)")
	}
	cmd := exec.Command("sh", "-c", "read x")
	w, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	def := sliceOf(t, pid)
	if def == uint64(ShortSlice.Nanoseconds()) {
		t.Fatalf("a new process already has the short slice %d", def)
	}
	if err := SetSlice("/proc", pid, ShortSlice); err != nil {
		t.Fatal(err)
	}
	if got := sliceOf(t, pid); got != uint64(ShortSlice.Nanoseconds()) {
		t.Errorf("slice after SetSlice: %d ns, want %d", got, ShortSlice.Nanoseconds())
	}
	if err := SetSlice("/proc", pid, 0); err != nil {
		t.Fatal(err)
	}
	if got := sliceOf(t, pid); got != def {
		t.Errorf("slice after SetSlice 0: %d ns, want the default %d", got, def)
	}
	w.Close()
	_ = cmd.Wait()
	if err := SetSlice("/proc", pid, ShortSlice); err == nil {
		t.Error("SetSlice of an exited process succeeded")
	}
}
