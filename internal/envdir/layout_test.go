package envdir

import (
	"strings"
	"testing"
)

// With a disk, everything the environment writes is on it and everything
// the runner writes is not: a full disk cannot stop the runner from saving
// its state, and the environment cannot reach the image file.
func TestLayoutWithDisk(t *testing.T) {
	plain := New("/data", "e1")
	lay := plain.WithDisk()
	if plain.HasDisk() || !lay.HasDisk() {
		t.Fatal("HasDisk wrong")
	}
	disk := lay.Disk()
	if disk != "/data/envs/e1/disk" || lay.DiskImage() != "/data/envs/e1/disk.img" {
		t.Fatalf("disk at %s, image %s", disk, lay.DiskImage())
	}
	svc := lay.Service("db")
	onDisk := map[string]string{
		"workspace": lay.Workspace(), "staging": lay.Staging(), "upper": lay.Upper(), "work": lay.Work(),
		"volumes": lay.Volumes(), "run": lay.Run(), "svc": lay.ServicesData(),
		"svc upper": svc.Upper(), "svc work": svc.Work(), "svc run": svc.Run(),
	}
	for name, p := range onDisk {
		if !strings.HasPrefix(p, disk+"/") {
			t.Errorf("%s at %s: not on the disk", name, p)
		}
	}
	off := map[string]string{
		"state": lay.State(), "etc": lay.Etc(), "log": lay.LogFile(), "runtime": lay.Runtime(), "rootfs": lay.Rootfs(),
		"lower": lay.Lower(), "mnt": lay.Mnt(), "agent socket": lay.AgentSocket(), "image": lay.DiskImage(),
		"svc rootfs": svc.Rootfs(), "svc runtime": svc.Runtime(), "svc mnt": svc.Mnt(), "svc log": lay.ServiceLog("db"),
	}
	for name, p := range off {
		if strings.HasPrefix(p, disk+"/") || !strings.HasPrefix(p, lay.Dir+"/") {
			t.Errorf("%s at %s: want it in %s, outside the disk", name, p, lay.Dir)
		}
	}
	// Without a disk nothing moves.
	if plain.Workspace() != "/data/envs/e1/workspace" || plain.Service("db").Upper() != "/data/envs/e1/svc/db/upper" || plain.ServicesData() != plain.Services() {
		t.Errorf("plain layout moved: %s, %s", plain.Workspace(), plain.Service("db").Upper())
	}
}
