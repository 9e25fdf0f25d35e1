package cli

import (
	"strings"
	"testing"

	covev1 "github.com/covedev/cove/proto/cove/v1"
)

func TestCPUControlFlags(t *testing.T) {
	class := &covev1.EnvironmentClass{Id: "default", Cpus: 2}
	for _, c := range []struct {
		name    string
		o       runnerOptions
		on      bool
		burst   int32
		wantErr string
	}{
		{"default: on, the whole host", runnerOptions{cpuControl: true, cgroupParent: "cove"}, true, 0, ""},
		{"a ceiling", runnerOptions{cpuControl: true, cgroupParent: "cove", classCPUBurst: 4}, true, 4, ""},
		{"the class's CPUs", runnerOptions{cpuControl: true, cgroupParent: "cove", classCPUBurst: 2}, true, 2, ""},
		{"off", runnerOptions{cgroupParent: "cove"}, false, 0, ""},
		{"below the class", runnerOptions{cpuControl: true, classCPUBurst: 1}, false, 0, "below --class-cpus 2"},
		{"negative", runnerOptions{cpuControl: true, classCPUBurst: -1}, false, 0, "0 for the whole host"},
		{"ceiling without the loop", runnerOptions{classCPUBurst: 4}, false, 0, "drop --cpu-control=false"},
	} {
		cc, on, err := cpuControl(c.o, class)
		switch {
		case c.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: error %v, want one saying %q", c.name, err, c.wantErr)
			}
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
		case on != c.on:
			t.Errorf("%s: loop on %v, want %v", c.name, on, c.on)
		case on && (cc.CgroupParent != "cove" || cc.Burst["default"] != c.burst):
			t.Errorf("%s: %+v", c.name, cc)
		}
	}
}
