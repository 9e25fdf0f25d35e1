package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/covedev/cove/internal/diskquota"
)

// TestDiskQuota: with --class-disk, each environment's writable data is on
// a disk of its own. Root inside fills it as fast as it can: writes stop
// with ENOSPC, in the workspace and in the root file system alike, the
// runner's data dir gave no more than the quota, and a neighbour
// environment still writes. df inside shows the quota for / and the
// workspace; status and /metrics show the use. Stopping and starting keeps
// the data, and so does a runner killed and restarted; deleting leaves no
// mount, loop device or image. The class's
// block IO limit holds on the disk.
func TestDiskQuota(t *testing.T) {
	if err := diskquota.Check(); err != nil {
		t.Skipf("no disk quota on this host: %v", err)
	}
	const (
		quota = 256 << 20
		write = 4 << 20 // bytes/s
		total = 16 << 20
	)
	metrics := freePort(t)
	var dataDir string
	// Registered first, so it runs last: whatever a failure left attached
	// under the test's directory is detached.
	t.Cleanup(func() {
		if dataDir == "" {
			return
		}
		ls, _ := diskquota.Loops()
		for _, l := range ls {
			if strings.HasPrefix(l.Backing, dataDir+"/") {
				_ = diskquota.Detach(l.Backing)
			}
		}
	})
	c := newClusterWith(t, "--class-disk", fmt.Sprint(quota), "--metrics-listen", metrics, "--class-io-write-bps", fmt.Sprint(write))
	dataDir = filepath.Join(c.dir, "data")
	u := c.user
	reg := images(t)
	for _, name := range []string{"full", "neighbour"} {
		repo := gitRepo(t, filepath.Join(c.dir, name+"repo"), map[string]string{
			".devcontainer/devcontainer.json": `{"image": "` + reg + `/test/busybox:latest"}`,
		})
		u.must("env", "create", repo, "--name", name, "--wait", "--timeout", "3m")
	}
	id := field(u.envJSON("full"), "id")
	img := filepath.Join(dataDir, "runner", "envs", id, "disk.img")
	if _, err := os.Stat(img); err != nil {
		// cove up's runner keeps its data under data/runner.
		t.Fatalf("no disk image for the environment: %v", err)
	}

	// df inside: the quota, for the workspace and for /.
	out := u.must("ssh", "full", "--", "df -k /workspaces /")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 2 {
			t.Fatalf("df output: %q", out)
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || kb*1024 > quota || kb*1024 < quota/2 {
			t.Errorf("df inside shows %s KiB for %s, want the %d MiB quota:\n%s", f[1], f[len(f)-1], quota>>20, out)
		}
	}

	sh := func(name, cmd string) string {
		out, errs, _ := u.run("ssh", name, "--", cmd+" 2>&1; echo exit=$?")
		return out + errs
	}
	// Root inside reaches no loop device (it could otherwise write the
	// raw image).
	if out := sh("full", "ls /dev/loop-control /dev/loop0"); strings.Contains(out, "exit=0") {
		t.Errorf("loop devices visible inside the environment:\n%s", out)
	}

	// The attack: fill the root file system (the overlay's upper dir),
	// then the workspace, as fast as dd goes.
	for _, target := range []string{"/fill", "/workspaces/fill"} {
		out := sh("full", fmt.Sprintf("dd if=/dev/zero of=%s bs=1M count=%d", target, 2*quota>>20))
		if !strings.Contains(out, "No space left on device") || strings.Contains(out, "exit=0") {
			t.Errorf("filling %s past the quota: want ENOSPC\n%s", target, out)
		}
		if target == "/fill" {
			u.must("ssh", "full", "--", "rm -f /fill")
		}
	}
	// The data dir gave the image no more than the quota (allocated from
	// the start: disks are not overcommitted).
	var st syscall.Stat_t
	if err := syscall.Stat(img, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > quota+quota/100 { // the host file system's extent blocks aside
		t.Errorf("the disk image takes %d bytes on the host, more than the %d quota", st.Blocks*512, quota)
	}
	// The neighbour is untouched.
	if out := sh("neighbour", "dd if=/dev/zero of=/workspaces/ok bs=1M count=16 conv=fsync"); !strings.Contains(out, "exit=0") {
		t.Errorf("neighbour could not write while the other environment's disk was full:\n%s", out)
	}

	// The class's write limit holds on the disk too (its loop device
	// carries it): direct IO, which a limit can only slow, so the bound
	// holds however loaded the host is.
	start := time.Now()
	if out := sh("neighbour", fmt.Sprintf("dd if=/dev/zero of=/workspaces/direct bs=1M count=%d oflag=direct", total>>20)); !strings.Contains(out, "exit=0") {
		t.Fatalf("direct IO on the disk: %s", out)
	}
	rate := float64(total) / time.Since(start).Seconds()
	if rate > 1.5*write {
		t.Errorf("direct IO on the disk at %.0f bytes/s, over 1.5 × the %d bytes/s limit", rate, write)
	}
	t.Logf("direct IO on the disk: %.0f bytes/s (limit %d)", rate, write)

	// Use: in /metrics at once, in status once sampled.
	if used := scrapeValue(t, metrics, "cove_environment_disk_bytes", id); used < quota/2 {
		t.Errorf("cove_environment_disk_bytes = %v, want the full disk's use", used)
	}
	if size := scrapeValue(t, metrics, "cove_environment_disk_limit_bytes", id); size <= 0 || size > quota {
		t.Errorf("cove_environment_disk_limit_bytes = %v", size)
	}
	waitFor(t, "the disk use in the environment's status", func() bool {
		used, _ := strconv.ParseInt(field(u.envJSON("full"), "status", "usage", "diskBytes"), 10, 64)
		return used >= quota/2
	})

	// Stop: the disk is unmounted and its loop device gone; start: the
	// data is back.
	u.must("env", "stop", "full", "--wait")
	// The loop device goes when the last holder of the file system lets
	// go: at once, unless a mount namespace made meanwhile (a container
	// starting, a clone sandbox, other tests') still has a copy.
	waitFor(t, "the stopped environment's loop device to go", func() bool { return attached(t, img) == 0 })
	if mounted(t, filepath.Dir(img)+"/disk") {
		t.Error("stopped environment's disk still mounted")
	}
	u.must("env", "start", "full", "--wait", "--timeout", "3m")
	if out := u.must("ssh", "full", "--", "ls -l /workspaces/fill"); !strings.Contains(out, "fill") {
		t.Errorf("data lost over a stop and start: %s", out)
	}

	// A runner killed and restarted finds the disk mounted and adopts the
	// running environment: the same one loop device, one mount, the data.
	c.up.kill9()
	c.up.start()
	waitFor(t, "cove up to come back", func() bool { _, _, code := u.run("whoami"); return code == 0 })
	waitFor(t, "the environment to be reachable again", func() bool {
		_, _, code := u.run("ssh", "full", "--", "test -s /workspaces/fill")
		return code == 0
	})
	if n := attached(t, img); n != 1 {
		t.Errorf("after a runner restart: %d loop devices on the disk, want the one", n)
	}
	if n := mountCount(t, filepath.Dir(img)+"/disk"); n != 1 {
		t.Errorf("after a runner restart: the disk mounted %d times, want once", n)
	}

	// Delete: nothing of the disk is left.
	u.must("env", "delete", "full", "--wait")
	waitFor(t, "the deleted environment's loop device to go", func() bool { return attached(t, img) == 0 })
	if _, err := os.Lstat(img); !os.IsNotExist(err) {
		t.Errorf("deleted environment left its disk image: %v", err)
	}
	if mounted(t, filepath.Dir(img)) {
		t.Error("deleted environment left a mount")
	}
	u.must("env", "delete", "neighbour", "--wait")
}

func attached(t *testing.T, img string) int {
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

// mountCount is how many mounts are at point.
func mountCount(t *testing.T, point string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == point {
			n++
		}
	}
	return n
}

// mounted reports whether anything is mounted at or below dir.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			return true
		}
	}
	return false
}

// TestDiskQuotaCompose: a Docker Compose environment's named volumes and
// its sibling services' file systems are on its disk too: filling a
// volume stops at the quota, df shows it for the volume, the data stays
// over a stop and start, and deleting leaves nothing of the disk.
func TestDiskQuotaCompose(t *testing.T) {
	if err := diskquota.Check(); err != nil {
		t.Skipf("no disk quota on this host: %v", err)
	}
	const quota = 192 << 20
	var dataDir string
	t.Cleanup(func() { // registered first: runs last
		if dataDir == "" {
			return
		}
		ls, _ := diskquota.Loops()
		for _, l := range ls {
			if strings.HasPrefix(l.Backing, dataDir+"/") {
				_ = diskquota.Detach(l.Backing)
			}
		}
	})
	c := newClusterWith(t, "--class-disk", fmt.Sprint(quota))
	dataDir = filepath.Join(c.dir, "data")
	u := c.user
	bb := images(t) + "/test/busybox:latest"
	repo := gitRepo(t, filepath.Join(c.dir, "vols"), map[string]string{
		".devcontainer/devcontainer.json": `{"dockerComposeFile": ["compose.yml"], "service": "app", "workspaceFolder": "/workspaces/vols"}`,
		".devcontainer/compose.yml": `services:
  app:
    image: ` + bb + `
    command: ["sleep", "100000"]
    volumes: ["data:/var/lib/db", "../..:/workspaces"]
  db:
    image: ` + bb + `
    command: ["sleep", "100000"]
    volumes: ["data:/shared"]
volumes:
  data:
`,
	})
	u.must("env", "create", repo, "--name", "vols", "--wait", "--timeout", "3m")
	id := field(u.envJSON("vols"), "id")
	envDir := filepath.Join(dataDir, "runner", "envs", id)
	img := filepath.Join(envDir, "disk.img")

	out, _, _ := u.run("ssh", "vols", "--", "df -k /var/lib/db | tail -1")
	if f := strings.Fields(out); len(f) < 2 {
		t.Fatalf("df: %q", out)
	} else if kb, err := strconv.ParseInt(f[1], 10, 64); err != nil || kb*1024 > quota || kb*1024 < quota/2 {
		t.Errorf("df inside shows %s KiB for the volume, want the %d MiB quota", f[1], quota>>20)
	}
	out, _, _ = u.run("ssh", "vols", "--", fmt.Sprintf("echo kept > /var/lib/db/file; dd if=/dev/zero of=/var/lib/db/fill bs=1M count=%d 2>&1; echo exit=$?", 2*quota>>20))
	if !strings.Contains(out, "No space left on device") || strings.Contains(out, "exit=0") {
		t.Errorf("filling a named volume past the quota: want ENOSPC\n%s", out)
	}
	// The service's own file system (its overlay's upper dir) is on the
	// disk as well.
	if ms, _ := filepath.Glob(filepath.Join(envDir, "disk", "svc", "db", "upper")); len(ms) != 1 {
		t.Errorf("the db service's upper dir is not on the disk")
	}
	u.must("ssh", "vols", "--", "rm /var/lib/db/fill")
	u.must("env", "stop", "vols", "--wait")
	waitFor(t, "the stopped environment's loop device to go", func() bool { return attached(t, img) == 0 })
	u.must("env", "start", "vols", "--wait", "--timeout", "3m")
	if out := u.must("ssh", "vols", "--", "cat /var/lib/db/file"); out != "kept\n" {
		t.Errorf("volume after stop/start: %q", out)
	}
	u.must("env", "delete", "vols", "--wait")
	waitFor(t, "the deleted environment's loop device to go", func() bool { return attached(t, img) == 0 })
	if mounted(t, envDir) {
		t.Error("deleted environment left a mount")
	}
	if _, err := os.Lstat(envDir); !os.IsNotExist(err) {
		t.Errorf("deleted environment left its directory: %v", err)
	}
}
