package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
)

func TestCPUControlFlags(t *testing.T) {
	class := []*covev1.EnvironmentClass{{Id: "default", Cpus: 2}}
	for _, c := range []struct {
		name    string
		o       runnerOptions
		on      bool
		wantErr string
	}{
		{"default: on, the whole host", runnerOptions{cpuControl: true, cgroupParent: "cove"}, true, ""},
		{"a ceiling", runnerOptions{cpuControl: true, cgroupParent: "cove", classCPUBurst: 4}, true, ""},
		{"the class's CPUs", runnerOptions{cpuControl: true, cgroupParent: "cove", classCPUBurst: 2}, true, ""},
		{"off", runnerOptions{cgroupParent: "cove"}, false, ""},
		{"below the class", runnerOptions{cpuControl: true, classCPUBurst: 1}, false, "below --class-cpus 2"},
		{"negative", runnerOptions{cpuControl: true, classCPUBurst: -1}, false, "0 for the whole host"},
		{"ceiling without the loop", runnerOptions{classCPUBurst: 4}, false, "drop --cpu-control=false"},
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
		case on && cc.CgroupParent != "cove":
			t.Errorf("%s: %+v", c.name, cc)
		}
	}
	// A class of a file that bursts needs the loop too.
	file := []*covev1.EnvironmentClass{{Id: "small", Cpus: 1}, {Id: "big", Cpus: 2, CpuBurst: 4}}
	if _, _, err := cpuControl(runnerOptions{classesFile: "f"}, file); err == nil || !strings.Contains(err.Error(), "class big sets cpuBurst 4") {
		t.Errorf("a bursting class without the loop: %v", err)
	}
	if _, on, err := cpuControl(runnerOptions{classesFile: "f", cpuControl: true}, file); err != nil || !on {
		t.Errorf("a bursting class with the loop: on %v, %v", on, err)
	}
}

// TestRunnerClasses: --classes FILE defines every class; without it the
// --class-* flags define the default class; the two never mix.
func TestRunnerClasses(t *testing.T) {
	parse := func(args ...string) runnerOptions {
		t.Helper()
		var o runnerOptions
		cmd := &cobra.Command{Use: "runner", RunE: func(*cobra.Command, []string) error { return nil }}
		addRunnerFlags(cmd, &o)
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		return o
	}
	f := filepath.Join(t.TempDir(), "classes.jsonc")
	if err := os.WriteFile(f, []byte(`{"classes": [{"id": "small", "cpus": 1, "memory": "2GiB"}, {"id": "big", "cpus": 2, "cpuBurst": 4, "memory": "8GiB"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cs, err := runnerClasses(parse("--classes", f))
	if err != nil || len(cs) != 2 || cs[0].GetId() != "small" || cs[1].GetCpuBurst() != 4 {
		t.Fatalf("classes from the file: %v, %v", cs, err)
	}
	if _, err := runnerClasses(parse("--classes", f, "--class-cpus", "3", "--class-swap", "1")); err == nil ||
		!strings.Contains(err.Error(), "drop --class-cpus, --class-swap") {
		t.Errorf("--classes with --class-* flags: %v, want them refused by name", err)
	}
	cs, err = runnerClasses(parse("--class-cpus", "3", "--class-cpu-burst", "4", "--class-memory-high", "70", "--class-io-write-bps", "1000"))
	if err != nil || len(cs) != 1 {
		t.Fatalf("the default class: %v, %v", cs, err)
	}
	if c := cs[0]; c.GetId() != "default" || c.GetCpus() != 3 || c.GetCpuBurst() != 4 || c.GetMemoryHighPercent() != 70 || c.GetIoWriteBps() != 1000 {
		t.Errorf("the default class from the flags: %v", c)
	}
}
