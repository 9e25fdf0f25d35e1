package content

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/idmap"
)

// sandboxExe is a copy of this test binary that the environment's uid can
// execute: it serves as `cove internal-sandbox` (see TestMain).
var sandboxExe string

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "internal-sandbox" {
		os.Exit(SandboxMain(os.Args[2:]))
	}
	code := func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "cove-sandbox-exe-")
			if err == nil {
				defer os.RemoveAll(dir)
				if copyExe(os.Args[0], filepath.Join(dir, "cove")) == nil && os.Chmod(dir, 0o711) == nil {
					sandboxExe = filepath.Join(dir, "cove")
				}
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

func copyExe(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// sandboxCmd runs script with sh in the clone sandbox, as root of a user
// namespace mapped to m, with rw as its writable directories.
func sandboxCmd(t *testing.T, m idmap.Range, rw []string, script string) *exec.Cmd {
	t.Helper()
	if sandboxExe == "" {
		t.Skip("needs root (user, mount and pid namespaces)")
	}
	argv := sandboxArgs([]string{sandboxExe, "internal-sandbox"}, "", rw, []string{"/bin/sh", "-c", script})
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + basePath}
	cmd.Dir = "/"
	cmd.SysProcAttr = sandboxAttr(m)
	return cmd
}

// TestSandboxHoldsOnlyTheWorkspace is S2 of the 2026-12 review, with a
// shell standing in for an exploited git: from inside the clone sandbox,
// another environment's workspace and the host's files are out of sight
// (even those any host user may read), host processes are invisible, only
// the workspace is writable, and nothing started inside outlives the
// clone.
func TestSandboxHoldsOnlyTheWorkspace(t *testing.T) {
	f := newFixture(t)
	victim := filepath.Join(f.base, "envs", "victim", "workspace")
	must(t, os.MkdirAll(victim, 0o755))
	must(t, os.WriteFile(filepath.Join(victim, "secret.txt"), []byte("VICTIM-SECRET\n"), 0o644))
	ws := f.opts.WorkspaceDir
	must(t, os.MkdirAll(ws, 0o755))
	must(t, os.Chown(ws, int(f.opts.IDMap.HostID), int(f.opts.IDMap.HostID)))
	marker := fmt.Sprint(900000 + rand.IntN(99999))
	script := strings.Join([]string{
		"cat " + victim + "/secret.txt 2>&1",
		"cat " + f.repo + "/README 2>&1",
		"echo procs: $(ls /proc | grep -c '^[0-9]')",
		"touch /usr/pwned 2>&1 || echo usr-readonly",
		"echo ok > " + ws + "/written",
		// A daemon the exploited git leaves behind.
		"setsid sleep " + marker + " </dev/null >/dev/null 2>&1 &",
		"echo done",
	}, "\n")
	out, err := sandboxCmd(t, f.opts.IDMap, []string{ws}, script).CombinedOutput()
	if err != nil {
		t.Fatalf("sandbox: %v\n%s", err, out)
	}
	s := string(out)
	if strings.Contains(s, "VICTIM-SECRET") || strings.Contains(s, "hello") {
		t.Errorf("the sandbox read files outside the workspace:\n%s", s)
	}
	if !strings.Contains(s, "usr-readonly") {
		t.Errorf("/usr writable in the sandbox:\n%s", s)
	}
	if _, err := os.Stat("/usr/pwned"); err == nil {
		os.Remove("/usr/pwned")
		t.Error("the sandbox wrote to the host's /usr")
	}
	var procs int
	if _, err := fmt.Sscanf(s[strings.Index(s, "procs:"):], "procs: %d", &procs); err != nil || procs > 5 {
		t.Errorf("sandbox sees %d processes (host processes visible?):\n%s", procs, s)
	}
	if b, err := os.ReadFile(filepath.Join(ws, "written")); err != nil || string(b) != "ok\n" {
		t.Errorf("workspace not writable from the sandbox: %q %v", b, err)
	}
	// PID 1 has exited: the kernel killed the daemon with it.
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && strings.Contains(string(b), "sleep\x00"+marker) {
			t.Errorf("a process started in the sandbox outlived it: pid %s", e.Name())
		}
	}
}

// TestSandboxDropsInheritedDescriptors: a descriptor the runner leaked into
// the sandbox by mistake (another environment's directory, say) does not
// reach the command run there.
func TestSandboxDropsInheritedDescriptors(t *testing.T) {
	f := newFixture(t)
	victim := filepath.Join(f.base, "victim-upper")
	must(t, os.MkdirAll(victim, 0o755))
	must(t, os.WriteFile(filepath.Join(victim, "notes"), []byte("VICTIM-NOTES\n"), 0o644))
	dir, err := os.Open(victim)
	must(t, err)
	defer dir.Close()
	ws := f.opts.WorkspaceDir
	must(t, os.MkdirAll(ws, 0o755))
	cmd := sandboxCmd(t, f.opts.IDMap, []string{ws}, "cat /proc/self/fd/3/notes 2>&1; exit 0")
	cmd.ExtraFiles = []*os.File{dir} // the leak: descriptor 3
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sandbox: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "VICTIM-NOTES") {
		t.Fatalf("the command read through a leaked descriptor:\n%s", out)
	}
}
