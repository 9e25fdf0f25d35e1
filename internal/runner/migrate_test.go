package runner

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/covedev/cove/internal/runtime"
)

// TestContinuesFromMainState puts a state file written by the runner of
// f9135bc (unversioned, flat) beside its running containers and checks that
// the new runner reads every section from it and continues: nothing to do
// for the running environment — in particular postStartCommand does not
// run again for the container it ran in — and a stop goes on from there.
func TestContinuesFromMainState(t *testing.T) {
	c := newCrashWorld(t)
	r := c.runner(0, false)
	const id = "env-7f3a"
	lay := r.layout(id)
	b, err := os.ReadFile(filepath.Join("..", "envdir", "testdata", "state-v0-f9135bc.json"))
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.MkdirAll(lay.Dir, 0o711))
	must(t, os.WriteFile(lay.State(), b, 0o600))
	st, err := loadState(lay.State())
	if err != nil {
		t.Fatal(err)
	}
	if st.Lifecycle.Pid != 4242 || !st.Lifecycle.CreatedDone || st.Content.RepoName != "app" || st.Mount.WorkspaceOwner != "1000:1000" ||
		st.Image.DC == nil || len(st.Image.DC.Ports.Forward) != 2 || st.Image.Compose == nil || st.Image.Compose.Services[0].Healthcheck == nil ||
		st.Failure.SpecVersion != 9 || st.Rebuild.Generation != 3 || !st.Start.StartedOnce || st.Network.IP != "10.88.0.5" {
		t.Fatalf("state from main read as %+v", st)
	}
	// What the old runner left running: the dev container (its lifecycle
	// ran in pid 4242) and the db service, both file systems mounted, the
	// agent's socket.
	c.rt.Set(id, runtime.State{Status: runtime.StatusRunning, Pid: 4242})
	c.rt.Set(svcID(id, "db"), runtime.State{Status: runtime.StatusRunning, Pid: 4243})
	for _, l := range append(st.Image.Layers, st.Image.Compose.Services[0].Layers...) {
		c.images.layers[l] = true
	}
	c.images.mounts[lay.Rootfs()] = true
	c.images.mounts[lay.Service("db").Rootfs()] = true
	must(t, os.WriteFile(lay.AgentSocket(), nil, 0o600))

	obs, err := r.observe(context.Background(), id, st)
	if err != nil {
		t.Fatal(err)
	}
	if steps := plan(phaseRunning, obs); len(steps) != 0 {
		t.Fatalf("running environment from main: plan %v, want nothing (no lifecycle commands again)", steps)
	}
	// A stop continues from it, with the services, and keeps the state.
	if steps := plan(phaseStopped, obs); len(steps) == 0 || steps[0] != stepStop {
		t.Fatalf("stop plan %v", steps)
	}
	env := c.env()
	env.Id = id
	env.Spec.DesiredPhase, env.Spec.SpecVersion = phaseStopped, 10
	if err := c.reconcileUntil(r, env); err != nil {
		t.Fatal(err)
	}
	for _, cid := range []string{id, svcID(id, "db")} {
		if s, _ := c.rt.State(context.Background(), cid); s.Status != runtime.StatusAbsent {
			t.Errorf("%s is %s after the stop, want absent", cid, s.Status)
		}
	}
	st, err = loadState(lay.State())
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != 1 || st.Lifecycle.Pid != 4242 || st.Image.Compose == nil {
		t.Errorf("state after the stop: %+v", st)
	}
}
