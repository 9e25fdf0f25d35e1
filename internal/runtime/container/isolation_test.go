package container

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/covedev/cove/internal/testutil"

	"github.com/covedev/cove/internal/runtime"
)

// exec runs args inside container id (with its namespaces, capabilities and
// seccomp profile) and returns the combined output.
func (h *testHost) exec(t *testing.T, id string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	cmd := exec.CommandContext(ctx, "runc", append([]string{"--root", h.root, "exec", id}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

func (h *testHost) mustExec(t *testing.T, id string, args ...string) string {
	t.Helper()
	out, err := h.exec(t, id, args...)
	if err != nil {
		t.Fatalf("exec %q: %v: %s", args, err, out)
	}
	return out
}

func startSpec(t *testing.T, rt *Runtime, spec runtime.Spec) runtime.State {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := rt.Delete(ctx, spec.ID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rt.Start(ctx, spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	st, err := rt.State(ctx, spec.ID)
	if err != nil || st.Status != runtime.StatusRunning {
		t.Fatalf("State = %+v, %v; want running", st, err)
	}
	return st
}

// procStatusField returns a field of /proc/PID/status.
func procStatusField(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

func TestIsolation(t *testing.T) {
	h := newTestHost(t)
	rt := h.runtime(t)
	spec := h.spec(t, "iso")

	data := t.TempDir()
	makeTraversable(t, data)
	if err := os.WriteFile(filepath.Join(data, "hello"), []byte("hello from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec.Mounts = []runtime.Mount{{Source: data, Destination: "/data", Type: "bind", Options: []string{"rbind", "ro"}}}
	spec.Resources = runtime.Resources{CPUMillis: 500, MemoryBytes: 256 << 20, Pids: 321}
	for _, d := range []string{"/dev/fuse", "/dev/net/tun"} {
		if _, err := os.Stat(d); err == nil {
			spec.Devices = append(spec.Devices, d)
		}
	}
	st := startSpec(t, rt, spec)
	id := spec.ID

	t.Run("UserNamespace", func(t *testing.T) {
		if got := h.mustExec(t, id, "id", "-u"); got != "0" {
			t.Errorf("id -u inside = %q, want 0", got)
		}
		uids := strings.Fields(procStatusField(t, st.Pid, "Uid"))
		if len(uids) == 0 || uids[0] != fmt.Sprint(spec.IDMap.HostID) {
			t.Errorf("host Uid of PID 1 = %v, want %d", uids, spec.IDMap.HostID)
		}
		if got := h.mustExec(t, id, "cat", "/proc/self/uid_map"); !strings.Contains(got, fmt.Sprint(spec.IDMap.HostID)) {
			t.Errorf("uid_map = %q", got)
		}
	})
	t.Run("Namespaces", func(t *testing.T) {
		for _, ns := range []string{"user", "pid", "mnt", "uts", "ipc", "cgroup", "net"} {
			host, err := os.Readlink("/proc/self/ns/" + ns)
			if err != nil {
				t.Fatal(err)
			}
			inside, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", st.Pid, ns))
			if err != nil {
				t.Fatal(err)
			}
			if host == inside {
				t.Errorf("%s namespace shared with the host (%s)", ns, host)
			}
		}
		// A new network namespace: loopback only.
		if got := h.mustExec(t, id, "ls", "/sys/class/net"); got != "lo" {
			t.Errorf("network interfaces = %q, want lo", got)
		}
		if got := h.mustExec(t, id, "cat", "/proc/1/cmdline"); !strings.HasPrefix(got, "/bin/sh") {
			t.Errorf("PID 1 inside = %q, want the spec's process", got)
		}
	})
	t.Run("Hostname", func(t *testing.T) {
		if got := h.mustExec(t, id, "hostname"); got != spec.Hostname {
			t.Errorf("hostname = %q, want %q", got, spec.Hostname)
		}
	})
	t.Run("MaskedAndReadonlyProc", func(t *testing.T) {
		for _, f := range []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/interrupts"} {
			if _, err := os.Stat(f); err != nil {
				continue // not in this kernel
			}
			if out := h.mustExec(t, id, "sh", "-c", "cat "+f+" 2>/dev/null | wc -c"); out != "0" {
				t.Errorf("%s not masked: %s bytes readable", f, out)
			}
		}
		if out, err := h.exec(t, id, "sh", "-c", "echo evil > /proc/sys/kernel/hostname"); err == nil {
			t.Errorf("write to /proc/sys succeeded: %s", out)
		} else if !strings.Contains(out, "Read-only") {
			t.Errorf("write to /proc/sys: %s, want a read-only file system error", out)
		}
		if got := h.mustExec(t, id, "ls", "/sys/firmware"); got != "" {
			t.Errorf("/sys/firmware not masked: %q", got)
		}
	})
	t.Run("BindMountReadonly", func(t *testing.T) {
		if got := h.mustExec(t, id, "cat", "/data/hello"); got != "hello from host" {
			t.Errorf("/data/hello = %q", got)
		}
		if out, err := h.exec(t, id, "touch", "/data/new"); err == nil {
			t.Errorf("write to read-only bind mount succeeded: %s", out)
		}
		if _, err := os.Stat(filepath.Join(data, "new")); err == nil {
			t.Error("file created on the host through a read-only mount")
		}
	})
	t.Run("Seccomp", func(t *testing.T) {
		if got := h.mustExec(t, id, "grep", "Seccomp:", "/proc/self/status"); !strings.HasSuffix(got, "2") {
			t.Errorf("seccomp mode = %q, want filter (2)", got)
		}
		// Creating a user namespace needs no capability, so only the
		// profile can deny it.
		out, err := h.exec(t, id, "unshare", "-U", "true")
		if err == nil {
			t.Errorf("unshare -U succeeded inside: %s", out)
		} else if !strings.Contains(out, "not permitted") {
			t.Errorf("unshare -U: %s, want EPERM", out)
		}
		if out, err := h.exec(t, id, "swapon", "/tmp"); err == nil || !strings.Contains(out, "not permitted") {
			t.Errorf("swapon: %v: %s, want EPERM", err, out)
		}
	})
	t.Run("Capabilities", func(t *testing.T) {
		// Docker's default set.
		const want = "00000000a80425fb"
		for _, f := range []string{"CapBnd", "CapEff", "CapPrm"} {
			if got := procStatusField(t, st.Pid, f); got != want {
				t.Errorf("%s = %s, want %s", f, got, want)
			}
		}
		if got := procStatusField(t, st.Pid, "NoNewPrivs"); got != "0" {
			t.Errorf("NoNewPrivs = %s, want 0", got)
		}
	})
	t.Run("Limits", func(t *testing.T) {
		limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", st.Pid))
		if err != nil {
			t.Fatal(err)
		}
		// Without CAP_SYS_RESOURCE the runner cannot raise its own limit
		// and containers get the runner's.
		if rt.nofile < nofileLimit {
			t.Logf("open files limit capped at the runner's %d", rt.nofile)
		}
		if want := fmt.Sprintf("Max open files            %-21d%-21d", rt.nofile, rt.nofile); !strings.Contains(string(limits), want) {
			t.Errorf("PID 1 limits do not contain %q:\n%s", want, limits)
		}
		want := map[string]string{
			"memory/memory.limit_in_bytes": fmt.Sprint(spec.Resources.MemoryBytes),
			"pids/pids.max":                fmt.Sprint(spec.Resources.Pids),
			"cpu/cpu.cfs_quota_us":         "50000",
			"cpu/cpu.cfs_period_us":        "100000",
		}
		if cgroups.Mode() == cgroups.Unified {
			want = map[string]string{
				"memory.max": fmt.Sprint(spec.Resources.MemoryBytes),
				"pids.max":   fmt.Sprint(spec.Resources.Pids),
				"cpu.max":    "50000 100000",
			}
		}
		for f, v := range want {
			dir, file := filepath.Split(f)
			p := filepath.Join("/sys/fs/cgroup", dir, h.cgroupParent, id, file)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Errorf("read limit: %v", err)
				continue
			}
			if got := strings.TrimSpace(string(b)); got != v {
				t.Errorf("%s = %s, want %s", p, got, v)
			}
		}
	})
	t.Run("Devices", func(t *testing.T) {
		if got := h.mustExec(t, id, "sh", "-c", "echo x > /dev/null && head -c 4 /dev/zero | wc -c"); got != "4" {
			t.Errorf("default devices: %q", got)
		}
		if out, err := h.exec(t, id, "mknod", "/tmp/sda", "b", "8", "0"); err == nil {
			t.Errorf("created a block device node: %s", out)
		}
		if len(spec.Devices) == 0 {
			t.Skip("no /dev/fuse or /dev/net/tun on this host")
		}
		for _, d := range spec.Devices {
			if out, err := h.exec(t, id, "sh", "-c", "test -c "+d+" && : <"+d); err != nil {
				t.Errorf("granted device %s not usable: %v: %s", d, err, out)
			}
		}
	})
}
