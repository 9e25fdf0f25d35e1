package runner

import (
	"reflect"
	"testing"

	"github.com/covedev/cove/internal/runtime"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

func TestPlan(t *testing.T) {
	running := covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING
	stopped := covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED
	deleted := covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED
	absent, up, exited := runtime.StatusAbsent, runtime.StatusRunning, runtime.StatusStopped
	ready := observed{stateExists: true, contentReady: true, imageReady: true}
	with := func(o observed, f func(*observed)) observed { f(&o); return o }
	tests := []struct {
		name    string
		desired covev1.EnvironmentPhase
		obs     observed
		want    []step
	}{
		{"fresh create", running, observed{container: absent},
			[]step{stepPrepare, stepClone, stepImage, stepMount, stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
		{"interrupted after clone", running, with(ready, func(o *observed) { o.imageReady = false; o.container = absent }),
			[]step{stepImage, stepMount, stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
		{"start a stopped env", running, with(ready, func(o *observed) { o.container = absent }),
			[]step{stepMount, stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
		{"rootfs still mounted", running, with(ready, func(o *observed) { o.container = absent; o.rootfsMounted, o.someMounted = true, true }),
			[]step{stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
		{"adopt running env after restart", running, with(ready, func(o *observed) {
			o.container = up
			o.rootfsMounted, o.someMounted = true, true
			o.devcontainerDone = true
		}),
			[]step{stepWaitAgent}},
		{"steady", running, with(ready, func(o *observed) {
			o.container = up
			o.rootfsMounted, o.someMounted = true, true
			o.agentReady = true
			o.devcontainerDone = true
		}), nil},
		{"lifecycle interrupted", running, with(ready, func(o *observed) { o.container = up; o.rootfsMounted, o.someMounted = true, true; o.agentReady = true }),
			[]step{stepFeatures, stepRestart, stepLifecycle}},
		{"crashed container restarts", running, with(ready, func(o *observed) { o.container = exited; o.rootfsMounted, o.someMounted = true, true }),
			[]step{stepStop, stepDeleteContainer, stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
		{"half-created container", running, with(ready, func(o *observed) { o.container = runtime.StatusCreated; o.rootfsMounted, o.someMounted = true, true }),
			[]step{stepStop, stepDeleteContainer, stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
		{"stop running", stopped, with(ready, func(o *observed) { o.container = up; o.rootfsMounted, o.someMounted = true, true }),
			[]step{stepStop, stepDeleteContainer, stepUnmount}},
		{"stop interrupted after delete", stopped, with(ready, func(o *observed) { o.container = absent; o.rootfsMounted, o.someMounted = true, true }),
			[]step{stepUnmount}},
		{"services' file systems partly mounted, start", running, with(ready, func(o *observed) { o.container = absent; o.someMounted = true }),
			[]step{stepMount, stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
		{"services' file systems partly mounted, stop", stopped, with(ready, func(o *observed) { o.container = absent; o.someMounted = true }),
			[]step{stepUnmount}},
		{"already stopped", stopped, with(ready, func(o *observed) { o.container = absent }), nil},
		{"never started, stop", stopped, observed{container: absent}, nil},
		{"delete running", deleted, with(ready, func(o *observed) { o.container = up; o.rootfsMounted, o.someMounted = true, true }),
			[]step{stepStop, stepDeleteContainer, stepUnmount, stepRemove}},
		{"delete stopped", deleted, with(ready, func(o *observed) { o.container = absent }), []step{stepRemove}},
		{"delete gone", deleted, observed{container: absent}, nil},
		{"rebuild running", running, with(ready, func(o *observed) { o.container = up; o.rootfsMounted, o.someMounted = true, true; o.rebuild = true }),
			[]step{stepStop, stepDeleteContainer, stepUnmount, stepReset, stepImage, stepMount, stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
		{"rebuild stopped", running, with(ready, func(o *observed) { o.container = absent; o.rebuild = true }),
			[]step{stepReset, stepImage, stepMount, stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
		{"rebuild before first start is a no-op", running, observed{container: absent, rebuild: true},
			[]step{stepPrepare, stepClone, stepImage, stepMount, stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := plan(tt.desired, tt.obs); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("plan = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRangeAllocator(t *testing.T) {
	a := newRangeAllocator(1<<31, 65536, 3)
	r1, err := a.allocate("a")
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := a.allocate("b")
	if r1.HostID == r2.HostID || r2.HostID != r1.HostID+65536 {
		t.Fatalf("ranges %v %v", r1, r2)
	}
	if err := a.reserve("c", r1); err == nil {
		t.Fatal("reserved a range owned by another env")
	}
	if _, err := a.allocate("c"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.allocate("d"); err == nil {
		t.Fatal("allocated past the last slot")
	}
	a.release(r1)
	r4, err := a.allocate("d")
	if err != nil || r4 != r1 {
		t.Fatalf("freed range not reused: %v %v", r4, err)
	}
}
