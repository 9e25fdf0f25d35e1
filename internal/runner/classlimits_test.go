package runner

import (
	"os"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/runtime"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

func TestClassLimitsResources(t *testing.T) {
	size := envconfig.Resources{CPUMillis: 2000, MemoryBytes: 1000 << 20, Pids: 8192}
	cl := classLimits{byClass: map[string]ClassLimits{
		"io":   {MemoryHighPercent: 100, SwapBytes: -1, WriteBPS: 50 << 20, ReadIOPS: 1000},
		"swap": {MemoryHighPercent: 75, SwapBytes: 1 << 30},
	}, major: 254, minor: 0}

	// A class without an entry (and the runner's default class when no
	// flag is given): reclaim target at 90%, no swap, no IO limit.
	got := cl.resources("default", size)
	if got.CPUMillis != 2000 || got.MemoryBytes != 1000<<20 || got.Pids != 8192 {
		t.Errorf("sizes changed: %+v", got)
	}
	page := int64(os.Getpagesize())
	if got.MemoryHighBytes != (1000<<20)/100*DefaultMemoryHighPercent/page*page || got.SwapBytes != runtime.NoSwap || got.IO != nil {
		t.Errorf("defaults: %+v, want memory.high at %d%%, no swap, no IO limit", got, DefaultMemoryHighPercent)
	}

	got = cl.resources("io", size)
	if got.MemoryHighBytes != 0 || got.SwapBytes != 0 {
		t.Errorf("no reclaim target and unlimited swap asked: %+v", got)
	}
	if len(got.IO) != 1 || got.IO[0] != (runtime.DeviceIO{Major: 254, Minor: 0, WriteBPS: 50 << 20, ReadIOPS: 1000}) {
		t.Errorf("IO = %+v", got.IO)
	}

	got = cl.resources("swap", size)
	if got.MemoryHighBytes != (1000<<20)/100*75/page*page || got.SwapBytes != 1<<30 {
		t.Errorf("75%% and 1 GiB of swap: %+v", got)
	}

	// No memory limit: no reclaim target or swap limit derived from it.
	if got := cl.resources("default", envconfig.Resources{Pids: 10}); got.MemoryHighBytes != 0 || got.SwapBytes != 0 {
		t.Errorf("without a memory limit: %+v", got)
	}
}

func TestNewClassLimitsRefuses(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct {
		c    *covev1.EnvironmentClass
		want string
	}{
		"percent":        {&covev1.EnvironmentClass{MemoryHighPercent: 120}, "memoryHigh: 120%: want 1 to 100"},
		"negative":       {&covev1.EnvironmentClass{MemoryHighPercent: -5}, "want 1 to 100"},
		"swap":           {&covev1.EnvironmentClass{SwapBytes: -2}, "-1 for unlimited"},
		"burst below":    {&covev1.EnvironmentClass{Cpus: 2, CpuBurst: 1}, "cpuBurst: 1 is below cpus 2"},
		"negative burst": {&covev1.EnvironmentClass{CpuBurst: -1}, "0 for the whole host"},
		"negative io":    {&covev1.EnvironmentClass{IoWriteBps: -1}, "io: rates must not be negative"},
		"negative pids":  {&covev1.EnvironmentClass{Pids: -1}, "pids"},
	} {
		c.c.Id = "c"
		_, err := newClassLimits([]*covev1.EnvironmentClass{c.c}, dir)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "class c") {
			t.Errorf("%s: %v, want an error naming the class and saying %q", name, err, c.want)
		}
	}

	// IO limits on a data dir without a block device (a tmpfs): the
	// runner refuses to start rather than promise limits it cannot keep.
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		_, err := newClassLimits([]*covev1.EnvironmentClass{{Id: "c", IoWriteBps: 1 << 20}}, "/dev/shm")
		if err == nil || !strings.Contains(err.Error(), "block device") {
			t.Errorf("IO limits on a tmpfs data dir: %v", err)
		}
	}
	// Without IO limits the same data dir is fine.
	if _, err := newClassLimits([]*covev1.EnvironmentClass{{Id: "c", SwapBytes: 1 << 20}}, "/dev/shm"); err != nil {
		t.Errorf("no IO limits: %v", err)
	}
	// On this host's disk the device is found, and the class's limits are
	// the ones applied.
	cl, err := newClassLimits([]*covev1.EnvironmentClass{{Id: "c", IoReadBps: 1 << 20, MemoryHighPercent: 80, SwapBytes: -1}}, dir)
	if err != nil {
		t.Skipf("temporary directory not on a block device: %v", err)
	}
	if cl.major == 0 && cl.minor == 0 {
		t.Errorf("no device found for %s", dir)
	}
	if got := cl.byClass["c"]; got != (ClassLimits{ReadBPS: 1 << 20, MemoryHighPercent: 80, SwapBytes: -1}) {
		t.Errorf("limits of class c: %+v", got)
	}
}

// TestWithLimitDefaults: the runner advertises the reclaim target it
// applies, so the server shows what environments get.
func TestWithLimitDefaults(t *testing.T) {
	in := []*covev1.EnvironmentClass{{Id: "a", MemoryBytes: 1 << 30}, {Id: "b", MemoryBytes: 1 << 30, MemoryHighPercent: 100}, {Id: "c"}}
	out := withLimitDefaults(in)
	if out[0].GetMemoryHighPercent() != DefaultMemoryHighPercent || out[1].GetMemoryHighPercent() != 100 || out[2].GetMemoryHighPercent() != 0 {
		t.Errorf("reclaim targets %d, %d, %d; want %d, 100, 0 (no memory limit)", out[0].GetMemoryHighPercent(), out[1].GetMemoryHighPercent(), out[2].GetMemoryHighPercent(), DefaultMemoryHighPercent)
	}
	if in[0].GetMemoryHighPercent() != 0 {
		t.Error("the caller's class was changed")
	}
}
