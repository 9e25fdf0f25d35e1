package resources

import (
	goruntime "runtime"
	"syscall"
)

// Default class sizing. Each environment's cgroup gets its class's limits;
// limits are not reservations, so a runner's environments together may be
// promised more than the host has. The default class keeps that promise
// small enough that a few busy environments cannot take the host (and the
// runner, its SSH gateway and port proxy with it) down:
//
//   - a reserve for the runner, the agents' and the kernel's own needs is
//     set aside first: 10% of the host's memory, at most 1 GiB;
//   - each environment may use a quarter of the rest (at least 1 GiB, at
//     most all of the rest), so four environments at their limit together
//     still leave the reserve;
//   - and half the host's CPUs (at least one), so one environment's build
//     leaves the other half to everything else.
const (
	reserveMax     = 1 << 30 // most memory reserved for the host
	reserveDivisor = 10      // reserve: a tenth of the host's memory, up to reserveMax
	classDivisor   = 4       // environments at their limit before the reserve is reached
	classMinMemory = 1 << 30 // smallest default memory limit
)

// HostReserve is the memory set aside for the host (runner, gateway, page
// cache, kernel) before environments are sized, for hostMem bytes of RAM.
func HostReserve(hostMem int64) int64 {
	return min(reserveMax, hostMem/reserveDivisor)
}

// DefaultClassSize is the CPUs and memory limit of the default class on a
// host with hostMem bytes of memory and ncpu CPUs (see the constants
// above). A hostMem of 0 (unknown) gives no memory limit.
func DefaultClassSize(hostMem int64, ncpu int) (cpus int32, memory int64) {
	cpus = int32(max(1, ncpu/2))
	if hostMem <= 0 {
		return cpus, 0
	}
	avail := hostMem - HostReserve(hostMem)
	memory = min(max(classMinMemory, avail/classDivisor), avail)
	return cpus, memory
}

// HostDefaultClassSize is DefaultClassSize for this host: its memory
// (sysinfo) and the CPUs this process may run on.
func HostDefaultClassSize() (cpus int32, memory int64) {
	var si syscall.Sysinfo_t
	var mem int64
	if syscall.Sysinfo(&si) == nil {
		mem = int64(si.Totalram) * int64(si.Unit)
	}
	return DefaultClassSize(mem, goruntime.NumCPU())
}
