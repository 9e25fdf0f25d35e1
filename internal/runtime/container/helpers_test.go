package container

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/runtime/runtimetest"
	"github.com/covedev/cove/internal/testutil"
)

const busybox = "/bin/busybox"

var applets = []string{"sh", "sleep", "cat", "id", "ls", "mount", "hostname", "echo", "unshare",
	"grep", "test", "true", "false", "touch", "reboot", "swapon", "sysctl", "stat", "wc"}

func TestMain(m *testing.M) {
	if arg := os.Getenv(helperEnv); arg != "" {
		helperRunner(arg)
	}
	if os.Geteuid() == 0 {
		// Container inits are orphaned by `runc create`; reap them here
		// rather than leave zombies to a PID 1 that does not reap.
		if err := BecomeSubreaper(); err != nil {
			fmt.Fprintln(os.Stderr, "become subreaper:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// requireRunc skips unless the test can run containers.
func requireRunc(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "to run containers")
	testutil.RequireTool(t, "runc")
	if _, err := os.Stat(busybox); err != nil {
		t.Skip("busybox-static not installed (/bin/busybox)")
	}
}

// testHost is a runc root and cgroup parent private to one test.
type testHost struct {
	root, cgroupParent string
}

func newTestHost(t *testing.T) *testHost {
	t.Helper()
	requireRunc(t)
	h := &testHost{
		root:         t.TempDir(),
		cgroupParent: fmt.Sprintf("cove-test-%d", rand.Uint32()),
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer cancel()
		if err := resources.Remove(c, "/"+h.cgroupParent); err != nil {
			t.Errorf("remove cgroup parent: %v", err)
		}
	})
	return h
}

func (h *testHost) runtime(t *testing.T) *Runtime {
	t.Helper()
	rt, err := New(Config{Root: h.root, CgroupParent: h.cgroupParent})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// spec builds a busybox root filesystem owned by a fresh host id range and
// returns a spec running runtimetest.Script in it.
func (h *testHost) spec(t *testing.T, id string) runtime.Spec {
	t.Helper()
	m := idmap.Range{HostID: 3_000_000_000 + rand.Uint32N(15_000)*65536, Size: 65536}
	dir := t.TempDir()
	makeTraversable(t, dir)
	rootfs := filepath.Join(dir, "rootfs")
	buildRootfs(t, rootfs, m.HostID)
	stateDir := filepath.Join(dir, "state")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(stateDir, consoleLog)); err == nil && len(b) > 0 {
				t.Logf("console log of %s:\n%s", id, b)
			}
		}
	})
	return runtime.Spec{
		ID:       id,
		Hostname: "env-" + id,
		StateDir: stateDir,
		Rootfs:   rootfs,
		IDMap:    m,
		Process: runtime.Process{
			Args: []string{"/bin/sh", "-c", runtimetest.Script},
			Env:  []string{defaultPath, "HOME=/root"},
			Cwd:  "/",
		},
	}
}

// makeTraversable opens dir and its temporary parents to others: the
// container's root is an unprivileged host uid that must reach its rootfs.
func makeTraversable(t *testing.T, dir string) {
	t.Helper()
	tmp := filepath.Clean(os.TempDir())
	for d := dir; strings.HasPrefix(d, tmp+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func buildRootfs(t *testing.T, rootfs string, owner uint32) {
	t.Helper()
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "root", "mnt", "data"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyFile(busybox, filepath.Join(rootfs, "bin/busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range applets {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":  "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
	}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(rootfs, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	err := filepath.Walk(rootfs, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(owner), int(owner))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func idm() idmap.Range { return idmap.Range{HostID: 100000, Size: 65536} }
