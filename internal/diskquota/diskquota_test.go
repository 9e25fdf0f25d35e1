package diskquota

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/covedev/cove/internal/mountinfo"

	"golang.org/x/sys/unix"
)

func TestHasFS(t *testing.T) {
	pf := []byte("nodev\tsysfs\nnodev\ttmpfs\n\text3\n\text4\nnodev\toverlay\n")
	if !hasFS(pf, "ext4") || !hasFS(pf, "overlay") {
		t.Error("ext4 and overlay not found in /proc/filesystems' format")
	}
	if hasFS(pf, "btrfs") || hasFS(pf, "ext") {
		t.Error("a file system not listed (or a prefix of one) found")
	}
}

// Loops reads the kernel's list: attached devices only, a removed image
// marked as such.
func TestLoopsFromSysfs(t *testing.T) {
	dir := t.TempDir()
	old := sysBlock
	sysBlock = dir
	t.Cleanup(func() { sysBlock = old })
	for name, backing := range map[string]string{"loop0": "/data/envs/a/disk.img\n", "loop1": "", "loop2": "/data/envs/b/disk.img (deleted)\n", "vda": ""} {
		if err := os.MkdirAll(filepath.Join(dir, name, "loop"), 0o755); err != nil {
			t.Fatal(err)
		}
		if backing != "" {
			if err := os.WriteFile(filepath.Join(dir, name, "loop", "backing_file"), []byte(backing), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	ls, err := Loops()
	if err != nil {
		t.Fatal(err)
	}
	want := []Loop{{"/dev/loop0", "/data/envs/a/disk.img", false}, {"/dev/loop2", "/data/envs/b/disk.img", true}}
	slices.SortFunc(ls, func(a, b Loop) int { return cmpString(a.Device, b.Device) })
	if !slices.Equal(ls, want) {
		t.Errorf("loops = %+v, want %+v", ls, want)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestCreateRefusesTinyDisk(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := Create(context.Background(), img, MinSize-1); err == nil {
		t.Fatal("a disk below the minimum was made")
	}
	if _, err := os.Lstat(img); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("image left behind: %v", err)
	}
}

// needLoop skips unless this test may attach loop devices and make ext4.
func needLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mount)")
	}
	if err := Check(); err != nil {
		t.Skipf("no disk quota on this host: %v", err)
	}
}

// mountDisk makes and mounts a disk of size in a temporary directory, and
// unmounts and detaches it when the test ends, whatever happened.
func mountDisk(t *testing.T, size int64) (img, target string) {
	t.Helper()
	dir := t.TempDir()
	img, target = filepath.Join(dir, "disk.img"), filepath.Join(dir, "disk")
	t.Cleanup(func() {
		_ = Unmount(target)
		_ = Detach(img)
	})
	if err := Create(context.Background(), img, size); err != nil {
		t.Fatal(err)
	}
	if err := Mount(img, target); err != nil {
		t.Fatal(err)
	}
	return img, target
}

// The attack: fill the disk from below it as fast as possible. Writes stop
// with ENOSPC at the disk's size, the file system holding the image has
// not grown past it, and the space is the disk's own (statfs, what df
// shows).
func TestFillStopsAtSize(t *testing.T) {
	needLoop(t)
	const size = 96 << 20
	img, target := mountDisk(t, size)
	var hostBefore unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(img), &hostBefore); err != nil {
		t.Fatal(err)
	}
	used, total, err := Usage(target)
	if err != nil {
		t.Fatal(err)
	}
	if total <= size/2 || total > size || used >= total/4 {
		t.Fatalf("new disk: used %d of %d, want nearly all of %d free", used, total, size)
	}
	f, err := os.Create(filepath.Join(target, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var written int64
	for {
		n, err := f.Write(buf)
		written += int64(n)
		if err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("write failed with %v, want ENOSPC", err)
			}
			break
		}
		if written > 2*size {
			t.Fatalf("wrote %d bytes into a %d-byte disk", written, size)
		}
	}
	if err := f.Sync(); err != nil && !errors.Is(err, unix.ENOSPC) {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(img, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > size+size/100 { // the host file system's extent blocks aside
		t.Errorf("image takes %d bytes on the host, more than the disk's %d", st.Blocks*512, size)
	}
	if used, total, _ = Usage(target); used < total*9/10 {
		t.Errorf("full disk: used %d of %d", used, total)
	}
}

// Mount is idempotent (a runner restarted finds its disk mounted), and
// unmounting detaches the loop device: nothing of the disk is left
// attached.
func TestMountIdempotentUnmountDetaches(t *testing.T) {
	needLoop(t)
	img, target := mountDisk(t, MinSize)
	if err := Mount(img, target); err != nil {
		t.Fatalf("second mount: %v", err)
	}
	if n := countMounts(t, target); n != 1 {
		t.Fatalf("%s mounted %d times, want once", target, n)
	}
	if attached(t, img) != 1 {
		t.Fatalf("want one loop device on %s", img)
	}
	if err := Unmount(target); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(target); err != nil {
		t.Fatalf("unmount of an unmounted disk: %v", err)
	}
	if err := Detach(img); err != nil {
		t.Fatal(err)
	}
	if n := attached(t, img); n != 0 {
		t.Errorf("%d loop devices still attached to %s after unmount", n, img)
	}
	// Mounted again, the data written before is there.
	if err := Mount(img, target); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "kept"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A disk mounted by the runner is nosuid and nodev: root inside cannot
// plant a setuid binary or a device node the host would honour.
func TestMountNosuidNodev(t *testing.T) {
	needLoop(t)
	_, target := mountDisk(t, MinSize)
	var fs unix.Statfs_t
	if err := unix.Statfs(target, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Flags&unix.ST_NOSUID == 0 || fs.Flags&unix.ST_NODEV == 0 {
		t.Errorf("disk mount flags %#x: want nosuid and nodev", fs.Flags)
	}
	// A device node made inside cannot be opened.
	node := filepath.Join(target, "null")
	if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if f, err := os.OpenFile(node, os.O_WRONLY, 0); err == nil {
		f.Close()
		t.Error("a device node on the disk opened: nodev is not in force")
	}
}

// Something else mounted where the disk goes is refused, not covered.
func TestMountRefusesForeignMount(t *testing.T) {
	needLoop(t)
	dir := t.TempDir()
	img, target := filepath.Join(dir, "disk.img"), filepath.Join(dir, "disk")
	if err := Create(context.Background(), img, MinSize); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", target, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })
	if err := Mount(img, target); err == nil {
		t.Fatal("disk mounted over a tmpfs already there")
	}
	if n := attached(t, img); n != 0 {
		t.Errorf("refused mount left %d loop devices attached", n)
	}
}

// A loop device whose image was removed while attached (a runner killed
// while deleting, or a device attached by other means without autoclear)
// is detached by DetachUnder.
func TestDetachUnderRemovedImage(t *testing.T) {
	needLoop(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := Create(context.Background(), img, MinSize); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	loop, err := attach(f, false)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	loop.Close()
	t.Cleanup(func() { _ = Detach(img) })
	if err := os.Remove(img); err != nil {
		t.Fatal(err)
	}
	if n := attached(t, img); n != 1 {
		t.Fatalf("setup: %d loop devices on the removed image, want 1", n)
	}
	got, err := DetachUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{img}) {
		t.Errorf("detached %q, want %q", got, img)
	}
	if n := attached(t, img); n != 0 {
		t.Errorf("%d loop devices left on the removed %s", n, img)
	}
	// Images still present are not touched.
	if got, err := DetachUnder(dir); err != nil || len(got) != 0 {
		t.Errorf("second sweep: %q, %v", got, err)
	}
}

func attached(t *testing.T, img string) int {
	t.Helper()
	ls, err := Loops()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range ls {
		if l.Backing == img {
			n++
		}
	}
	return n
}

func countMounts(t *testing.T, target string) int {
	t.Helper()
	ms, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range ms {
		if m.Point == target {
			n++
		}
	}
	return n
}

// An image whose loop device is still attached (its file system still
// mounted somewhere the runner's unmount did not reach) is mounted from
// that device again, never from a second one: two loop devices would be
// two independent ext4 mounts of the same blocks.
func TestMountReusesAttachedLoop(t *testing.T) {
	needLoop(t)
	img, target := mountDisk(t, MinSize)
	other := filepath.Join(filepath.Dir(target), "other")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	// A second mount of the same device, as a lingering mount namespace
	// would hold; the first goes.
	dev, err := mountedDevice(target)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, other, "ext4", unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(other, 0) })
	if err := Unmount(target); err != nil {
		t.Fatal(err)
	}
	if err := Mount(img, target); err != nil {
		t.Fatal(err)
	}
	if n := attached(t, img); n != 1 {
		t.Errorf("%d loop devices on %s, want the one still attached", n, img)
	}
	if again, _ := mountedDevice(target); again != dev {
		t.Errorf("mounted from %s, want %s", again, dev)
	}
}
