package resources

import "testing"

// TestDefaultClassSize is R4 of the 2026-12 review: the default class gave
// every environment half the host's memory and all its CPUs, so two busy
// environments could OOM the host, runner included.
func TestDefaultClassSize(t *testing.T) {
	const GiB = int64(1) << 30
	for _, c := range []struct {
		name     string
		mem      int64
		ncpu     int
		wantCPUs int32
		wantMem  int64
	}{
		{"laptop 16 GiB, 8 CPUs", 16 * GiB, 8, 4, 15 * GiB / 4},
		{"server 256 GiB, 64 CPUs", 256 * GiB, 64, 32, 255 * GiB / 4},
		{"small 4 GiB, 2 CPUs", 4 * GiB, 2, 1, GiB},             // a quarter of 3.6 GiB is under the floor
		{"tiny 2 GiB, 1 CPU", 2 * GiB, 1, 1, GiB},               // floor
		{"very small 1 GiB", GiB, 1, 1, GiB - GiB/10},           // all but the reserve: never more than the host
		{"odd CPUs", 8 * GiB, 3, 1, (8*GiB - 8*GiB/10) / 4},     // 8 GiB: reserve 0.8 GiB
		{"memory unknown", 0, 4, 2, 0},                          // no limit rather than a wrong one
		{"no CPU count", 8 * GiB, 0, 1, (8*GiB - 8*GiB/10) / 4}, // at least one CPU
	} {
		cpus, mem := DefaultClassSize(c.mem, c.ncpu)
		if cpus != c.wantCPUs || mem != c.wantMem {
			t.Errorf("%s: got %d CPUs, %d bytes; want %d, %d", c.name, cpus, mem, c.wantCPUs, c.wantMem)
		}
		if c.mem == 0 {
			continue
		}
		// The safety properties, for every host: the reserve is never
		// promised away, and four environments at their limit fit
		// beside it (unless the floor says otherwise).
		reserve := HostReserve(c.mem)
		if reserve <= 0 || reserve > GiB {
			t.Errorf("%s: reserve %d", c.name, reserve)
		}
		if mem > c.mem-reserve {
			t.Errorf("%s: one environment may use %d of %d bytes, into the reserve of %d", c.name, mem, c.mem, reserve)
		}
		if mem > GiB && 4*mem > c.mem-reserve {
			t.Errorf("%s: four environments at %d bytes overrun the host", c.name, mem)
		}
		if int(cpus) > max(1, c.ncpu/2) {
			t.Errorf("%s: %d CPUs of %d", c.name, cpus, c.ncpu)
		}
	}
}

func TestHostDefaultClassSize(t *testing.T) {
	cpus, mem := HostDefaultClassSize()
	if cpus < 1 || mem <= 0 {
		t.Errorf("this host: %d CPUs, %d bytes", cpus, mem)
	}
}
