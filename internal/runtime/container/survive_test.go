package container

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/testutil"
)

const helperEnv = "COVE_CONTAINER_TEST_HELPER"

// helperRunner is the "runner" process that TestSurvivesRunnerDeath starts
// (this test binary, dispatched from TestMain) and kills.
func helperRunner(arg string) {
	var in struct {
		Root, CgroupParent string
		Spec               runtime.Spec
	}
	fail := func(err error) {
		os.Stderr.WriteString("helper runner: " + err.Error() + "\n")
		os.Exit(2)
	}
	if err := json.Unmarshal([]byte(arg), &in); err != nil {
		fail(err)
	}
	rt, err := New(Config{Root: in.Root, CgroupParent: in.CgroupParent})
	if err != nil {
		fail(err)
	}
	if err := rt.Start(context.Background(), in.Spec); err != nil {
		fail(err)
	}
	os.Stdout.WriteString("started\n")
	time.Sleep(time.Minute) // killed by the parent
	os.Exit(0)
}

func TestSurvivesRunnerDeath(t *testing.T) {
	h := newTestHost(t)
	spec := h.spec(t, "survivor")
	arg, err := json.Marshal(map[string]any{"Root": h.root, "CgroupParent": h.cgroupParent, "Spec": spec})
	if err != nil {
		t.Fatal(err)
	}
	rt := h.runtime(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := rt.Delete(ctx, spec.ID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+string(arg))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := false
	for sc := bufio.NewScanner(out); sc.Scan(); {
		if strings.Contains(sc.Text(), "started") {
			started = true
			break
		}
		t.Log(sc.Text())
	}
	// The runner dies without any chance to clean up.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if !started {
		t.Fatal("helper runner did not start the container")
	}

	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	// Nothing marks the moment a container that dies with its runner would
	// be gone: give it a moment. (This pause can only miss a regression,
	// never fail the test on a slow machine; the exec below must work.)
	time.Sleep(200 * time.Millisecond)
	st, err := rt.State(ctx, spec.ID)
	if err != nil || st.Status != runtime.StatusRunning {
		t.Fatalf("State after runner death = %+v, %v; want running", st, err)
	}
	if got := h.mustExec(t, spec.ID, "echo", "alive"); got != "alive" {
		t.Errorf("exec after runner death: %q", got)
	}
	// The orphaned init was re-parented to this process (the subreaper), so
	// stopping it leaves no zombie.
	if err := rt.Stop(ctx, spec.ID, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, _, ok := procState(st.Pid); ok {
		t.Errorf("init %d left in /proc after Stop", st.Pid)
	}
}
