package runner

import (
	"syscall"
	"testing"

	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// A class without a disk size of its own advertises the size of the file
// system holding the runner's data directory (it advertised 0, which no
// hostRequirements.storage could meet); one with a size keeps it, and the
// configured classes are not modified.
func TestWithDisk(t *testing.T) {
	dir := t.TempDir()
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	size := int64(fs.Blocks) * fs.Frsize
	in := []*covev1.EnvironmentClass{{Id: "default"}, {Id: "sized", DiskBytes: 40 << 30}}
	out, err := withDisk(in, dir)
	if err != nil {
		t.Fatal(err)
	}
	if size <= 0 || out[0].GetDiskBytes() != size {
		t.Errorf("default class disk = %d, want the file system's size %d", out[0].GetDiskBytes(), size)
	}
	if out[1].GetDiskBytes() != 40<<30 {
		t.Errorf("sized class disk = %d, want its own 40 GB", out[1].GetDiskBytes())
	}
	if in[0].GetDiskBytes() != 0 {
		t.Error("the configured class was modified")
	}
	if _, err := withDisk(in, dir+"/missing"); err == nil {
		t.Error("a data directory that cannot be measured gave no error")
	}
}
