package resources

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// fakeV2 is a cgroup v2 file system in a directory, with the files the
// kernel would create for cgroup p: enough for createV2, which this host
// (v1 controllers, an empty v2 hierarchy) cannot run against a real one.
func fakeV2(t *testing.T, p string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{root, filepath.Dir(dir), dir} {
		if err := os.WriteFile(filepath.Join(d, "cgroup.controllers"), []byte("cpu io memory pids"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("max"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func readFile(t *testing.T, f string) string {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestCreateV2MemoryHighSwapIO(t *testing.T) {
	const p = "/cove/env1"
	root := fakeV2(t, p)
	dir := filepath.Join(root, p)
	l := Limits{MemoryBytes: 512 << 20, MemoryHighBytes: 460 << 20, SwapBytes: NoSwap,
		IO: []DeviceIO{{Major: 254, Minor: 0, ReadBPS: 10 << 20, WriteIOPS: 300}}}
	if err := createV2(root, p, l); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{
		"memory.max":      fmt.Sprint(512 << 20),
		"memory.high":     fmt.Sprint(460 << 20),
		"memory.swap.max": "0",
		"io.max":          fmt.Sprintf("254:0 rbps=%d wbps=max riops=max wiops=300", 10<<20),
	} {
		if got := readFile(t, filepath.Join(dir, f)); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
	if sc := readFile(t, filepath.Join(dir, "cgroup.subtree_control")); !strings.Contains(sc, "+io") || !strings.Contains(sc, "+memory") {
		t.Errorf("controllers enabled for the members: %q, want io and memory among them", sc)
	}

	// Some swap allowed, then the limits lifted: nothing stays behind.
	l.SwapBytes = 1 << 30
	if err := createV2(root, p, l); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "memory.swap.max")); got != fmt.Sprint(1<<30) {
		t.Errorf("memory.swap.max with 1 GiB of swap = %q", got)
	}
	l = Limits{MemoryBytes: 512 << 20, IO: []DeviceIO{{Major: 254, Minor: 0}}}
	if err := createV2(root, p, l); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{
		"memory.high":     fmt.Sprint(int64(math.MaxInt64)),
		"memory.swap.max": "max",
		"io.max":          "254:0 rbps=max wbps=max riops=max wiops=max",
	} {
		if got := readFile(t, filepath.Join(dir, f)); got != want {
			t.Errorf("lifted: %s = %q, want %q", f, got, want)
		}
	}
}

// TestCreateV2IORefusedWithoutController: an IO limit on a host whose v2
// hierarchy has no io controller is refused, naming it, rather than
// silently not applied.
func TestCreateV2IORefusedWithoutController(t *testing.T) {
	const p = "/cove/env1"
	root := fakeV2(t, p)
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu memory pids"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := createV2(root, p, Limits{IO: []DeviceIO{{Major: 254, WriteBPS: 1 << 20}}})
	if err == nil || !strings.Contains(err.Error(), "io controller") {
		t.Fatalf("createV2 with an IO limit and no io controller: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, p, "io.max")); err == nil {
		t.Error("io.max written without an io controller")
	}
}

// TestCreateV1MemoryHighSwapIO sets and lifts the limits in real v1
// hierarchies (this host's).
func TestCreateV1MemoryHighSwapIO(t *testing.T) {
	if m := cgroups.Mode(); m != cgroups.Legacy && m != cgroups.Hybrid {
		t.Skip("needs cgroup v1 controllers")
	}
	g := testParent(t, "group") + "/group"
	maj, min, err := BlockDevice(t.TempDir())
	if err != nil {
		t.Skipf("no block device to limit: %v", err)
	}
	l := Limits{MemoryBytes: 256 << 20, MemoryHighBytes: 200 << 20, SwapBytes: NoSwap,
		IO: []DeviceIO{{Major: maj, Minor: min, WriteBPS: 1 << 20, ReadIOPS: 100}}}
	if err := Create(g, l); err != nil {
		t.Fatal(err)
	}
	mem := func(f string) string { return readFile(t, filepath.Join(cgroupRoot, "memory", g, f)) }
	blkio := func(f string) string { return readFile(t, filepath.Join(cgroupRoot, "blkio", g, f)) }
	if got := mem("memory.soft_limit_in_bytes"); got != fmt.Sprint(200<<20) {
		t.Errorf("soft limit = %s, want %d", got, 200<<20)
	}
	_, memswErr := os.Stat(v1MemswFile)
	if memswErr == nil {
		if got := mem("memory.memsw.limit_in_bytes"); got != fmt.Sprint(256<<20) {
			t.Errorf("memory+swap limit without swap = %s, want the memory limit %d", got, 256<<20)
		}
	}
	dev := fmt.Sprintf("%d:%d", maj, min)
	if got := blkio("blkio.throttle.write_bps_device"); got != fmt.Sprintf("%s %d", dev, 1<<20) {
		t.Errorf("write bps = %q", got)
	}
	if got := blkio("blkio.throttle.read_iops_device"); got != dev+" 100" {
		t.Errorf("read iops = %q", got)
	}
	if got := blkio("blkio.throttle.read_bps_device"); got != "" {
		t.Errorf("read bps, not limited, = %q", got)
	}

	// Raised (swap allowed: memsw above the new limit) and lifted.
	if err := Create(g, Limits{MemoryBytes: 512 << 20, SwapBytes: 256 << 20, IO: []DeviceIO{{Major: maj, Minor: min}}}); err != nil {
		t.Fatal(err)
	}
	if memswErr == nil {
		if got := mem("memory.memsw.limit_in_bytes"); got != fmt.Sprint(768<<20) {
			t.Errorf("memory+swap limit = %s, want %d", got, 768<<20)
		}
	}
	// Unlimited reads as the kernel's largest value, which the root cgroup
	// shows (it has no soft limit).
	unlimited := readFile(t, filepath.Join(cgroupRoot, "memory", "memory.soft_limit_in_bytes"))
	if got := mem("memory.soft_limit_in_bytes"); got != unlimited {
		t.Errorf("soft limit not lifted: %s, want %s", got, unlimited)
	}
	for _, f := range []string{"blkio.throttle.write_bps_device", "blkio.throttle.read_iops_device"} {
		if got := blkio(f); got != "" {
			t.Errorf("%s not lifted: %q", f, got)
		}
	}
}

func TestSpecMemoryIO(t *testing.T) {
	l := Limits{MemoryBytes: 1 << 30, MemoryHighBytes: 900 << 20, SwapBytes: NoSwap,
		IO: []DeviceIO{{Major: 8, Minor: 0, WriteBPS: 5 << 20}}}
	// v2 (runc reads the unified map and converts memory+swap and the
	// throttles), whatever this host runs.
	v2 := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(1 << 30))}}
	specMemoryIO(v2, l, true)
	if v2.Unified["memory.high"] != fmt.Sprint(900<<20) || v2.Memory.Reservation != nil {
		t.Errorf("v2: memory.high = %q, reservation %v; want memory.high only (runc maps the reservation to memory.low)", v2.Unified["memory.high"], v2.Memory.Reservation)
	}
	if v2.Memory.Swap == nil || *v2.Memory.Swap != 1<<30 {
		t.Errorf("v2: memory+swap = %v, want the memory limit (swap.max 0)", v2.Memory.Swap)
	}

	out := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(1 << 30))}}
	SpecMemoryIO(out, l)
	if cgroups.Mode() == cgroups.Unified {
		if out.Unified["memory.high"] != fmt.Sprint(900<<20) {
			t.Errorf("memory.high = %q", out.Unified["memory.high"])
		}
		if out.Memory.Swap == nil || *out.Memory.Swap != 1<<30 {
			t.Errorf("memory+swap = %v, want the memory limit", out.Memory.Swap)
		}
	} else {
		if out.Memory.Reservation == nil || *out.Memory.Reservation != 900<<20 {
			t.Errorf("reservation = %v", out.Memory.Reservation)
		}
		if out.Unified != nil {
			t.Errorf("unified settings on v1 (runc refuses them): %v", out.Unified)
		}
		if _, err := os.Stat(v1MemswFile); err == nil && (out.Memory.Swap == nil || *out.Memory.Swap != 1<<30) {
			t.Errorf("memory+swap = %v, want the memory limit", out.Memory.Swap)
		}
	}
	if out.BlockIO == nil || len(out.BlockIO.ThrottleWriteBpsDevice) != 1 || out.BlockIO.ThrottleWriteBpsDevice[0].Rate != 5<<20 ||
		len(out.BlockIO.ThrottleReadBpsDevice) != 0 {
		t.Errorf("block IO = %+v, want only the write bps limit", out.BlockIO)
	}

	none := &specs.LinuxResources{}
	SpecMemoryIO(none, Limits{})
	if none.Memory != nil || none.BlockIO != nil || none.Unified != nil {
		t.Errorf("no limits gave %+v", none)
	}
}

func TestBlockDevice(t *testing.T) {
	// A partition resolves to its disk, as sysfs links them.
	sys := t.TempDir()
	disk := filepath.Join(sys, "devices", "vda")
	part := filepath.Join(disk, "vda1")
	if err := os.MkdirAll(part, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{filepath.Join(disk, "dev"): "254:0\n", filepath.Join(part, "dev"): "254:1\n", filepath.Join(part, "partition"): "1\n"} {
		if err := os.WriteFile(f, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	block := filepath.Join(sys, "block")
	if err := os.MkdirAll(block, 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"254:0": "../devices/vda", "254:1": "../devices/vda/vda1"} {
		if err := os.Symlink(target, filepath.Join(block, link)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ min, want int64 }{{1, 0}, {0, 0}} {
		maj, min, err := blockDisk(block, "/data", 254, c.min)
		if err != nil || maj != 254 || min != c.want {
			t.Errorf("disk of 254:%d = %d:%d, %v; want 254:%d", c.min, maj, min, err, c.want)
		}
	}
	if _, _, err := blockDisk(block, "/data", 0, 42); err == nil || !strings.Contains(err.Error(), "without a block device") {
		t.Errorf("a file system without a device: %v", err)
	}

	// This host: a tmpfs has no device to throttle.
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if _, _, err := BlockDevice("/dev/shm"); err == nil {
			t.Error("BlockDevice(/dev/shm, a tmpfs) found a device")
		}
	}
}
