package benchkit

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseProcStatCPU(t *testing.T) {
	// A command with spaces and a ')' of its own; utime 250, stime 50 ticks.
	line := []byte("1234 (we (ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 100 1000000 200 18446744073709551615\n")
	got, err := parseProcStatCPU(line)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want {
		t.Errorf("CPU = %s, want %s", got, want)
	}
	for _, bad := range []string{"1234 no command", "1234 (x) S 1 2", "1234 (x) S 1 1 1 0 -1 0 0 0 0 0 u s"} {
		if _, err := parseProcStatCPU([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestProcCPUAndRSSOfThisProcess(t *testing.T) {
	if _, err := ProcCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	rss, err := ProcRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss <= 0 {
		t.Errorf("RSS of a running process = %d", rss)
	}
}

func TestReadStat(t *testing.T) {
	p := filepath.Join(t.TempDir(), "memory.stat")
	if err := os.WriteFile(p, []byte("cache 4096\nrss 8192\ntotal_rss 12288\nnot-a-number x\n\nVmRSS:\t  2048 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := readStat(p)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]int64{"cache": 4096, "rss": 8192, "total_rss": 12288, "VmRSS:": 2048} {
		if st[k] != want {
			t.Errorf("%s = %d, want %d", k, st[k], want)
		}
	}
	if _, ok := st["not-a-number"]; ok {
		t.Error("a field that is not a number was read")
	}
	if _, err := statField(p, "usage_usec"); err == nil {
		t.Error("a missing field gave no error")
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 1: time.Millisecond} {
		if got := Percentile(ds, q); got != want {
			t.Errorf("p%g = %s, want %s", q, got, want)
		}
	}
	if Percentile(nil, 50) != 0 {
		t.Error("p50 of nothing is not 0")
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("Percentile sorted its argument")
	}
}

func TestCleanupsRunLastFirstOnce(t *testing.T) {
	var order []int
	var cl Cleanups
	cl.Add(func() { order = append(order, 1) })
	cl.Add(func() { order = append(order, 2) })
	cl.Run()
	cl.Run()
	if len(order) != 2 || order[0] != 2 || order[1] != 1 {
		t.Errorf("order = %v, want [2 1]", order)
	}
}
