package runner

import (
	"context"
	"testing"

	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/runtime"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// TestSweep: at start, the runner removes containers its environments no
// longer own and leaves alone what it cannot attribute.
func TestSweep(t *testing.T) {
	c := newCrashWorld(t)
	r := c.runner(0, false)
	// env1 runs with a db service; its state names only db.
	env := c.env()
	c.converge(r, env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	st, err := loadState(r.layout(env.Id).State())
	must(t, err)
	st.Image.Compose = &envconfig.ComposeState{DevService: "app", Order: []string{"db", "app"}, Services: []envconfig.ServiceState{{Name: "db"}}}
	must(t, saveState(r.layout(env.Id).State(), st))
	running := runtime.State{Status: runtime.StatusRunning, Pid: 7}
	for _, id := range []string{"env1-db", "env1-cache", "other-runner-env", "env1-old-svc"} {
		c.rt.Set(id, running)
	}
	must(t, r.sweep(context.Background()))
	for id, want := range map[string]runtime.Status{
		"env1": runtime.StatusRunning, "env1-db": runtime.StatusRunning, // owned
		"env1-cache": runtime.StatusAbsent, "env1-old-svc": runtime.StatusAbsent, // dropped services
		"other-runner-env": runtime.StatusRunning, // not ours to judge
	} {
		if s, _ := c.rt.State(context.Background(), id); s.Status != want {
			t.Errorf("%s is %s, want %s", id, s.Status, want)
		}
	}
}
