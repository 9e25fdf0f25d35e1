package runner

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/diskquota"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/testutil"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"golang.org/x/sys/unix"
)

// The disk is mounted before anything writes on it on every start path,
// kept through a rebuild, and unmounted on stop and delete.
func TestPlanDisk(t *testing.T) {
	running := covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING
	stopped := covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED
	deleted := covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED
	ready := observed{stateExists: true, contentReady: true, imageReady: true, container: runtime.StatusAbsent}
	with := func(o observed, f func(*observed)) observed { f(&o); return o }
	down := func(o *observed) { o.diskDown = true }
	up := func(o *observed) { o.diskMounted = true }
	tests := []struct {
		name    string
		desired covev1.EnvironmentPhase
		obs     observed
		want    []step
	}{
		{"start a stopped env", running, with(ready, down),
			[]step{stepDisk, stepMount, stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
		{"prepared, disk not mounted (runner killed): before the clone", running, with(ready, func(o *observed) { down(o); o.contentReady, o.imageReady = false, false }),
			[]step{stepDisk, stepClone, stepImage, stepMount, stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
		{"start, disk still mounted", running, with(ready, up),
			[]step{stepMount, stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
		{"rebuild a stopped env: disk before reset", running, with(ready, func(o *observed) { down(o); o.rebuild = true }),
			[]step{stepDisk, stepReset, stepImage, stepMount, stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
		{"rebuild running keeps the disk", running, with(ready, func(o *observed) {
			up(o)
			o.container, o.rootfsMounted, o.someMounted, o.rebuild = runtime.StatusRunning, true, true, true
		}),
			[]step{stepStop, stepDeleteContainer, stepUnmount, stepReset, stepImage, stepMount, stepStart, stepWaitAgent, stepFeatures, stepRestart, stepLifecycle}},
		{"stop", stopped, with(ready, func(o *observed) {
			up(o)
			o.container, o.rootfsMounted, o.someMounted = runtime.StatusRunning, true, true
		}),
			[]step{stepStop, stepDeleteContainer, stepUnmount, stepUnmountDisk}},
		{"stopped, disk left mounted (runner restarted)", stopped, with(ready, up), []step{stepUnmountDisk}},
		{"stopped, disk down", stopped, with(ready, down), nil},
		{"delete", deleted, with(ready, up), []step{stepUnmountDisk, stepRemove}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := plan(tt.desired, tt.obs); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("plan = %v, want %v", got, tt.want)
			}
		})
	}
}

// Only a disk size the operator set is a quota; a runner that cannot
// enforce one refuses to start, saying why.
func TestNewDiskQuotas(t *testing.T) {
	cs := []*covev1.EnvironmentClass{{Id: "default"}, {Id: "small", DiskBytes: 10 << 30}}
	ok := func() error { return nil }
	q, err := newDiskQuotas(cs, ok)
	if err != nil || !reflect.DeepEqual(q, diskQuotas{"small": 10 << 30}) {
		t.Fatalf("quotas %v, %v", q, err)
	}
	// Without a class disk limit, the host is not even asked.
	if q, err := newDiskQuotas(cs[:1], func() error { t.Error("checked without a quota"); return nil }); err != nil || len(q) != 0 {
		t.Errorf("no quota: %v, %v", q, err)
	}
	_, err = newDiskQuotas(cs, func() error { return errors.New("no loop devices") })
	if msg, visible := usererr.Message(err); !visible || !strings.Contains(msg, "no loop devices") || !strings.Contains(msg, "--class-disk") {
		t.Errorf("host without loop devices: %v (%q)", err, msg)
	}
	_, err = newDiskQuotas([]*covev1.EnvironmentClass{{Id: "tiny", DiskBytes: 1 << 20}}, ok)
	if msg, visible := usererr.Message(err); !visible || !strings.Contains(msg, "minimum") {
		t.Errorf("1 MiB disk: %v", err)
	}
}

// An environment made before disk quotas (its state has no disk section,
// as the v0 fixture) keeps its data where it was: no disk is assumed.
func TestOldStateHasNoDisk(t *testing.T) {
	var st envState
	if err := envdir.Load(filepath.Join("..", "envdir", "testdata", "state-v0-f9135bc.json"), &st); err != nil {
		t.Fatal(err)
	}
	lay := withDiskLayout(envdir.New("/data", "env-7f3a"), &st)
	if st.Disk.Bytes != 0 || lay.HasDisk() || lay.Workspace() != "/data/envs/env-7f3a/workspace" {
		t.Errorf("old environment: disk %d, workspace %s", st.Disk.Bytes, lay.Workspace())
	}
	// The section round-trips.
	st.Disk.Bytes = 1 << 30
	b, err := envdir.Encode(&st)
	if err != nil {
		t.Fatal(err)
	}
	var back envState
	if err := envdir.Decode(b, &back); err != nil || back.Disk.Bytes != 1<<30 {
		t.Errorf("disk section after a save: %+v %v", back.Disk, err)
	}
}

// The disk's life through the steps, for real (root, loop devices): the
// prepare step makes and mounts it with the workspace on it; a write
// past its size stops there with ENOSPC while the data dir takes nothing;
// stop unmounts it and leaves no loop device; the disk step mounts it
// again with the data kept; removal leaves no mount, loop device or
// image.
func TestDiskSteps(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mount)")
	}
	if err := diskquota.Check(); err != nil {
		t.Skipf("no disk quota on this host: %v", err)
	}
	ctx := context.Background()
	e, _ := testStepEnv(t, nil)
	e.env.Spec.ClassId = "small"
	img, disk := e.lay.DiskImage(), e.lay.Disk()
	t.Cleanup(func() {
		_ = diskquota.Unmount(disk)
		_ = diskquota.Detach(img)
	})
	const size = 96 << 20
	ranges := newRangeAllocator(1<<30, 65536, 4)
	if err := (prepareStep{ranges: ranges, disks: diskQuotas{"small": size}}).run(ctx, e); err != nil {
		t.Fatal(err)
	}
	if e.st.Disk.Bytes != size || !e.lay.HasDisk() || !diskMounted(e.lay) {
		t.Fatalf("after prepare: disk %d, layout %+v, mounted %v", e.st.Disk.Bytes, e.lay, diskMounted(e.lay))
	}
	// The environment can never write the image (root's, 0600, in the
	// root-owned environment directory), and what it writes on the disk
	// carries no setuid or device the host would honour.
	var ist unix.Stat_t
	if err := unix.Stat(img, &ist); err != nil {
		t.Fatal(err)
	}
	if ist.Uid != 0 || ist.Mode&0o777 != 0o600 {
		t.Errorf("disk image owned by %d, mode %o: want root's, 0600", ist.Uid, ist.Mode&0o777)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(disk, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Flags&unix.ST_NOSUID == 0 || fs.Flags&unix.ST_NODEV == 0 {
		t.Errorf("disk mounted with flags %#x: want nosuid and nodev", fs.Flags)
	}
	// Fill the workspace (as the environment would, from inside).
	ws := e.lay.Workspace()
	if err := os.MkdirAll(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := fill(filepath.Join(ws, "big"), 2*size); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("filling the disk: %v, want ENOSPC", err)
	}
	// The runner's own files are outside the disk: it can still save.
	if err := saveState(e.lay.State(), e.st); err != nil {
		t.Fatalf("state not saved with the disk full: %v", err)
	}
	// The image on the data dir's file system took no more than the disk's
	// size.
	var st unix.Stat_t
	if err := unix.Stat(img, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > size+size/100 { // the host file system's extent blocks aside
		t.Errorf("the disk image takes %d bytes of the data dir, more than its size %d", st.Blocks*512, size)
	}
	// Stop.
	if err := (unmountDiskStep{log: slog.Default()}).run(ctx, e); err != nil {
		t.Fatal(err)
	}
	if diskMounted(e.lay) {
		t.Fatal("stopped: disk still mounted")
	}
	waitDetached(t, img)
	// Start again, from a fresh layout as a restarted runner has.
	e.lay = envdir.New(filepath.Dir(filepath.Dir(e.lay.Dir)), "e1")
	if err := (diskStep{}).run(ctx, e); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(e.lay.Workspace(), "big")); err != nil || fi.Size() < size/2 {
		t.Fatalf("data after restart: %v", err)
	}
	// Delete.
	if err := (removeStep{net: envNet{n: fakeNetwork{}}, images: newFakeImages(t.TempDir()), ranges: ranges, log: slog.Default()}).run(ctx, e); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(e.lay.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("environment directory left: %v", err)
	}
	waitDetached(t, img)
}

// waitDetached waits for the loop device of img to go. It goes when the
// last holder of the file system lets go: at once, unless a mount
// namespace made while it was mounted (other tests' containers on a
// shared machine) still has a copy. Detach waits a while itself; the
// test's patience bounds it.
func waitDetached(t *testing.T, img string) {
	t.Helper()
	deadline := time.Now().Add(testutil.Patience(t))
	for attachedTo(t, img) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a loop device is still attached to %s", img)
		}
		_ = diskquota.Detach(img)
	}
}

func fill(path string, limit int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for n := int64(0); n < limit; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	return f.Sync()
}

func attachedTo(t *testing.T, img string) int {
	t.Helper()
	ls, err := diskquota.Loops()
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

// A loop device left attached to the image of an environment whose
// directory was removed (a runner killed while deleting it; attached
// here without autoclear by losetup) is detached when the runner starts.
func TestSweepDisks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices)")
	}
	if err := diskquota.Check(); err != nil {
		t.Skipf("no disk quota on this host: %v", err)
	}
	testutil.RequireTool(t, "losetup")
	data := t.TempDir()
	img := envdir.New(data, "gone").DiskImage()
	if err := os.MkdirAll(filepath.Dir(img), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := diskquota.Create(context.Background(), img, diskquota.MinSize); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = diskquota.Detach(img) })
	if out, err := exec.Command("losetup", "--find", img).CombinedOutput(); err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	// An image still there belongs to an environment: not touched.
	kept := envdir.New(data, "kept").DiskImage()
	if err := os.MkdirAll(filepath.Dir(kept), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := diskquota.Create(context.Background(), kept, diskquota.MinSize); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = diskquota.Detach(kept) })
	if out, err := exec.Command("losetup", "--find", kept).CombinedOutput(); err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	if err := os.RemoveAll(filepath.Dir(img)); err != nil {
		t.Fatal(err)
	}
	r := &Runner{cfg: Config{DataDir: data}, log: slog.Default()}
	r.sweepDisks()
	if n := attachedTo(t, img); n != 0 {
		t.Errorf("%d loop devices left on the removed image", n)
	}
	if n := attachedTo(t, kept); n != 1 {
		t.Errorf("%d loop devices on an environment's image, want its one untouched", n)
	}
}
