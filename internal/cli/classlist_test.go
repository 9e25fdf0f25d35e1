package cli

import (
	"strings"
	"testing"

	covev1 "github.com/covedev/cove/proto/cove/v1"
)

func TestPrintClasses(t *testing.T) {
	var b strings.Builder
	err := printClasses(&b, []*covev1.EnvironmentClass{
		{Id: "small", Cpus: 1, CpuBurst: 2, MemoryBytes: 4 << 30, MemoryHighPercent: 90, Pids: 8192, DiskBytes: 20 << 30, EgressPolicy: "allow-all"},
		{Id: "big\x1b]0;x\x07", Cpus: 4, MemoryBytes: 16 << 30, MemoryHighPercent: 100, SwapBytes: -1, IoWriteBps: 100 << 20, IoReadIops: 500},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"small  ", " 2 ", "4 GiB", "90%", "8192", "20 GiB", "unlimited", "500 IOPS, 100 MiB/s", "host"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.ContainsRune(out, 0x1b) {
		t.Errorf("a runner's escape sequence reached the terminal:\n%q", out)
	}
}
