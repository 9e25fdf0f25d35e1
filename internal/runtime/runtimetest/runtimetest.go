// Package runtimetest is the conformance suite every runtime.Runtime
// implementation runs.
//
// The suite drives environments built by the implementation's makeSpec. Their
// PID 1 must run until stopped and exit promptly on SIGTERM — unless the
// spec's environment contains IgnoreTermEnv, in which case it must ignore
// SIGTERM so the suite can check that Stop falls back to SIGKILL — and print
// a line "ready" once started. Script is a POSIX shell program with that
// behaviour. The suite sets Spec.ConsoleLog, Spec.Group and Spec.Resources
// itself where it tests them.
package runtimetest

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/runtime"
)

// IgnoreTermEnv is added to Spec.Process.Env when PID 1 must ignore SIGTERM.
const IgnoreTermEnv = "COVE_RUNTIMETEST_IGNORE_TERM=1"

// Script is a shell program for PID 1 with the behaviour the suite expects:
// run `/bin/sh -c Script`. PID 1 of a pid namespace only receives the
// signals it handles, hence the explicit traps.
const Script = `if [ "$COVE_RUNTIMETEST_IGNORE_TERM" = 1 ]; then trap '' TERM; else trap 'exit 0' TERM; fi
echo ready
while :; do sleep 1 & wait $!; done`

const opTimeout = 60 * time.Second

// Run runs the conformance suite. newRuntime returns a runtime instance;
// calling it again must return an independent instance over the same state,
// as after a runner restart. makeSpec returns a startable spec for id.
func Run(t *testing.T, newRuntime func(t *testing.T) runtime.Runtime, makeSpec func(t *testing.T, id string) runtime.Spec) {
	s := &suite{newRuntime: newRuntime, makeSpec: makeSpec}
	s.runState(t)
	t.Run("StopKillsAfterGrace", s.testStopKill)
	t.Run("ConsoleLog", s.testConsoleLog)
	t.Run("Group", s.testGroup)
	t.Run("ExtraFiles", s.testExtraFiles)
}

// RunState runs the part of the suite that is about the environments'
// states alone (start, stop, delete, recovery by a new instance, absent
// environments), which a runtime without processes (Fake) passes too.
func RunState(t *testing.T, newRuntime func(t *testing.T) runtime.Runtime, makeSpec func(t *testing.T, id string) runtime.Spec) {
	(&suite{newRuntime: newRuntime, makeSpec: makeSpec}).runState(t)
}

func (s *suite) runState(t *testing.T) {
	t.Run("StartIdempotent", s.testStartIdempotent)
	t.Run("StopGraceful", s.testStopGraceful)
	t.Run("DeleteIdempotent", s.testDelete)
	t.Run("Recovery", s.testRecovery)
	t.Run("Absent", s.testAbsent)
}

type suite struct {
	newRuntime func(t *testing.T) runtime.Runtime
	makeSpec   func(t *testing.T, id string) runtime.Spec
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return c
}

// start starts spec and registers its deletion.
func start(t *testing.T, rt runtime.Runtime, spec runtime.Spec) runtime.State {
	t.Helper()
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := rt.Delete(c, spec.ID); err != nil {
			t.Errorf("cleanup: delete %s: %v", spec.ID, err)
		}
	})
	if err := rt.Start(ctx(t), spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return wantStatus(t, rt, spec.ID, runtime.StatusRunning)
}

func wantStatus(t *testing.T, rt runtime.Runtime, id string, want runtime.Status) runtime.State {
	t.Helper()
	st, err := rt.State(ctx(t), id)
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	if st.Status != want {
		t.Fatalf("State(%s) = %q, want %q", id, st.Status, want)
	}
	if want == runtime.StatusRunning && st.Pid <= 0 {
		t.Fatalf("State(%s): running without a pid", id)
	}
	if want != runtime.StatusRunning && st.Pid != 0 {
		t.Errorf("State(%s) = %q with pid %d, want no pid", id, st.Status, st.Pid)
	}
	return st
}

func listed(t *testing.T, rt runtime.Runtime, id string) bool {
	t.Helper()
	ids, err := rt.List(ctx(t))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return slices.Contains(ids, id)
}

func (s *suite) testStartIdempotent(t *testing.T) {
	rt := s.newRuntime(t)
	spec := s.makeSpec(t, "rtt-start")
	st := start(t, rt, spec)
	if err := rt.Start(ctx(t), spec); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if again := wantStatus(t, rt, spec.ID, runtime.StatusRunning); again.Pid != st.Pid {
		t.Errorf("second Start replaced the environment: pid %d -> %d", st.Pid, again.Pid)
	}
	if !listed(t, rt, spec.ID) {
		t.Errorf("List does not contain running %s", spec.ID)
	}

	if err := rt.Stop(ctx(t), spec.ID, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	wantStatus(t, rt, spec.ID, runtime.StatusStopped)
	if !listed(t, rt, spec.ID) {
		t.Errorf("List does not contain stopped %s", spec.ID)
	}
	// A stale stopped environment is replaced.
	if err := rt.Start(ctx(t), spec); err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
	if again := wantStatus(t, rt, spec.ID, runtime.StatusRunning); again.Pid == st.Pid {
		t.Errorf("Start after Stop kept pid %d", st.Pid)
	}
}

func (s *suite) testStopGraceful(t *testing.T) {
	rt := s.newRuntime(t)
	spec := s.makeSpec(t, "rtt-term")
	start(t, rt, spec)
	time.Sleep(300 * time.Millisecond) // let PID 1 install its handler
	const grace = 20 * time.Second
	begin := time.Now()
	if err := rt.Stop(ctx(t), spec.ID, grace); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d := time.Since(begin); d > grace/2 {
		t.Errorf("Stop of a process that exits on SIGTERM took %v", d)
	}
	wantStatus(t, rt, spec.ID, runtime.StatusStopped)
	if err := rt.Stop(ctx(t), spec.ID, grace); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func (s *suite) testStopKill(t *testing.T) {
	rt := s.newRuntime(t)
	spec := s.makeSpec(t, "rtt-kill")
	spec.Process.Env = append(spec.Process.Env, IgnoreTermEnv)
	start(t, rt, spec)
	time.Sleep(300 * time.Millisecond)
	const grace = time.Second
	begin := time.Now()
	if err := rt.Stop(ctx(t), spec.ID, grace); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	d := time.Since(begin)
	if d < grace {
		t.Errorf("Stop returned after %v, before the %v grace period of a process ignoring SIGTERM", d, grace)
	}
	if d > grace+15*time.Second {
		t.Errorf("Stop took %v", d)
	}
	wantStatus(t, rt, spec.ID, runtime.StatusStopped)
}

func (s *suite) testDelete(t *testing.T) {
	rt := s.newRuntime(t)
	spec := s.makeSpec(t, "rtt-delete")
	start(t, rt, spec)
	// Delete stops a running environment first.
	if err := rt.Delete(ctx(t), spec.ID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantStatus(t, rt, spec.ID, runtime.StatusAbsent)
	if listed(t, rt, spec.ID) {
		t.Errorf("List contains deleted %s", spec.ID)
	}
	if err := rt.Delete(ctx(t), spec.ID); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	// The id can be used again.
	start(t, rt, spec)
}

func (s *suite) testRecovery(t *testing.T) {
	rt := s.newRuntime(t)
	spec := s.makeSpec(t, "rtt-recover")
	st := start(t, rt, spec)

	// A new instance, as after a runner restart, finds the environment.
	rt2 := s.newRuntime(t)
	if !listed(t, rt2, spec.ID) {
		t.Fatalf("new runtime instance does not list %s", spec.ID)
	}
	if again := wantStatus(t, rt2, spec.ID, runtime.StatusRunning); again.Pid != st.Pid {
		t.Errorf("new instance sees pid %d, want %d", again.Pid, st.Pid)
	}
	if err := rt2.Start(ctx(t), spec); err != nil {
		t.Fatalf("Start on new instance: %v", err)
	}
	if again := wantStatus(t, rt2, spec.ID, runtime.StatusRunning); again.Pid != st.Pid {
		t.Errorf("Start on new instance replaced the environment: pid %d -> %d", st.Pid, again.Pid)
	}
	if err := rt2.Stop(ctx(t), spec.ID, 5*time.Second); err != nil {
		t.Fatalf("Stop on new instance: %v", err)
	}
	wantStatus(t, rt, spec.ID, runtime.StatusStopped)
}

func (s *suite) testAbsent(t *testing.T) {
	rt := s.newRuntime(t)
	const id = "rtt-never-created"
	wantStatus(t, rt, id, runtime.StatusAbsent)
	if err := rt.Stop(ctx(t), id, time.Second); err != nil {
		t.Errorf("Stop of absent: %v", err)
	}
	if err := rt.Delete(ctx(t), id); err != nil {
		t.Errorf("Delete of absent: %v", err)
	}
	if listed(t, rt, id) {
		t.Errorf("List contains never created %s", id)
	}
}

// waitConsole waits until the file at p holds want n times.
func waitConsole(t *testing.T, p, want string, n int) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(p)
		if got = string(b); strings.Count(got, want) >= n {
			return
		}
	}
	t.Fatalf("console log %s = %q, want %q %d times", p, got, want, n)
}

func (s *suite) testConsoleLog(t *testing.T) {
	rt := s.newRuntime(t)
	spec := s.makeSpec(t, "rtt-console")
	// In a directory that does not exist yet.
	spec.ConsoleLog = filepath.Join(t.TempDir(), "logs", "console.log")
	start(t, rt, spec)
	waitConsole(t, spec.ConsoleLog, "ready\n", 1)

	// A restarted environment appends to the same log.
	if err := rt.Stop(ctx(t), spec.ID, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := rt.Start(ctx(t), spec); err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
	waitConsole(t, spec.ConsoleLog, "ready\n", 2)
}

func (s *suite) testGroup(t *testing.T) {
	rt := s.newRuntime(t)
	res := runtime.Resources{CPUMillis: 1000, MemoryBytes: 512 << 20, Pids: 500}
	a, b := s.makeSpec(t, "rtt-group-a"), s.makeSpec(t, "rtt-group-b")
	a.Group, b.Group = "rtt-group", "rtt-group"
	a.Resources, b.Resources = res, res
	start(t, rt, a)
	stB := start(t, rt, b)

	// Deleting one member leaves the others running.
	if err := rt.Delete(ctx(t), a.ID); err != nil {
		t.Fatalf("Delete %s: %v", a.ID, err)
	}
	wantStatus(t, rt, a.ID, runtime.StatusAbsent)
	if st := wantStatus(t, rt, b.ID, runtime.StatusRunning); st.Pid != stB.Pid {
		t.Errorf("Delete of %s replaced %s: pid %d -> %d", a.ID, b.ID, stB.Pid, st.Pid)
	}
	// A member can join again, and a new instance recovers the group.
	start(t, rt, a)
	rt2 := s.newRuntime(t)
	for _, id := range []string{a.ID, b.ID} {
		if err := rt2.Delete(ctx(t), id); err != nil {
			t.Fatalf("Delete %s on new instance: %v", id, err)
		}
		wantStatus(t, rt2, id, runtime.StatusAbsent)
	}
	// The group can be created again after its last member went.
	start(t, rt2, b)
}

// testExtraFiles: PID 1 inherits Spec.ExtraFiles as descriptors 3, 4...
func (s *suite) testExtraFiles(t *testing.T) {
	rt := s.newRuntime(t)
	spec := s.makeSpec(t, "rtt-files")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	spec.ExtraFiles = []*os.File{w}
	spec.Process.Args = []string{"/bin/sh", "-c", "echo handed-over >&3; exec 3>&-; " + Script}
	start(t, rt, spec)
	w.Close()
	r.SetReadDeadline(time.Now().Add(opTimeout))
	b, err := io.ReadAll(r) // EOF once PID 1 closed its copy
	if err != nil || string(b) != "handed-over\n" {
		t.Fatalf("read from PID 1's descriptor 3: %q, %v", b, err)
	}
}
