package cli

import (
	"testing"

	"github.com/covedev/cove/internal/runner"
	"github.com/spf13/cobra"
)

// TestClassLimitFlags: the default class's pids limit and its runner-side
// limits (reclaim target, swap, IO) come from the runner's flags, with the
// documented defaults.
func TestClassLimitFlags(t *testing.T) {
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
	o := parse()
	if got := defaultClass(o).GetPids(); got != defaultClassPids {
		t.Errorf("default pids limit = %d, want %d", got, defaultClassPids)
	}
	if o.classLimits != (runner.ClassLimits{MemoryHighPercent: runner.DefaultMemoryHighPercent}) {
		t.Errorf("default class limits = %+v, want a reclaim target at %d%%, no swap, no IO limit", o.classLimits, runner.DefaultMemoryHighPercent)
	}

	o = parse("--class-pids=500", "--class-memory-high=80", "--class-swap=-1",
		"--class-io-read-bps=1000", "--class-io-write-bps=2000", "--class-io-read-iops=30", "--class-io-write-iops=40")
	want := runner.ClassLimits{MemoryHighPercent: 80, SwapBytes: -1, ReadBPS: 1000, WriteBPS: 2000, ReadIOPS: 30, WriteIOPS: 40}
	if o.classLimits != want {
		t.Errorf("class limits = %+v, want %+v", o.classLimits, want)
	}
	c := defaultClass(o)
	if c.GetMemoryHighPercent() != 80 || c.GetSwapBytes() != -1 || c.GetIoReadBps() != 1000 || c.GetIoWriteBps() != 2000 || c.GetIoReadIops() != 30 || c.GetIoWriteIops() != 40 {
		t.Errorf("the default class does not carry its limits: %v", c)
	}
	if got := c.GetPids(); got != 500 {
		t.Errorf("pids = %d, want 500", got)
	}
	if got := defaultClass(parse("--class-pids=-1")).GetPids(); got != 0 {
		t.Errorf("--class-pids=-1 gave a pids limit of %d, want none (0)", got)
	}
}
