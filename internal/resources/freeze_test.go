package resources

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestFreezerV1Files freezes and thaws a cgroup on a fake v1 freezer
// hierarchy (a directory standing for cgroupfs).
func TestFreezerV1Files(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "cove", "env1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("THAWED\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := Freezer{V1: root}
	if err := f.Freeze(context.Background(), "/cove/env1"); err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, filepath.Join(dir, "freezer.state")); got != "FROZEN" {
		t.Fatalf("freezer.state %q after Freeze", got)
	}
	if thawed, _ := f.Thawed("/cove/env1"); thawed {
		t.Fatal("Thawed reports a frozen cgroup thawed")
	}
	if err := f.Thaw("/cove/env1"); err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, filepath.Join(dir, "freezer.state")); got != "THAWED" {
		t.Fatalf("freezer.state %q after Thaw", got)
	}
	// A removed environment's cgroup: nothing to thaw, no error.
	if err := f.Thaw("/cove/gone"); err != nil {
		t.Fatalf("thaw of a missing cgroup: %v", err)
	}
	if err := f.Freeze(context.Background(), "/"); err == nil {
		t.Fatal("froze the root cgroup")
	}
}

// TestFreezerV2Files uses a fake v2 hierarchy: cgroup.freeze is written,
// cgroup.events read. A cgroup the kernel does not report frozen before
// the context ends is thawed again, and the error says so.
func TestFreezerV2Files(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "cove", "env1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("cgroup.freeze", "0\n")
	write("cgroup.events", "populated 1\nfrozen 1\n") // the kernel's answer, as if at once
	f := Freezer{V2: root}
	if err := f.Freeze(context.Background(), "/cove/env1"); err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, filepath.Join(dir, "cgroup.freeze")); got != "1" {
		t.Fatalf("cgroup.freeze %q after Freeze", got)
	}
	if err := f.Thaw("/cove/env1"); err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, filepath.Join(dir, "cgroup.freeze")); got != "0" {
		t.Fatalf("cgroup.freeze %q after Thaw", got)
	}

	// Never reported frozen: Freeze gives up with the context and thaws.
	write("cgroup.events", "populated 1\nfrozen 0\n")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := f.Freeze(ctx, "/cove/env1")
	if err == nil || !strings.Contains(err.Error(), "not frozen in time") {
		t.Fatalf("Freeze of a cgroup that never froze: %v", err)
	}
	if got := readTrim(t, filepath.Join(dir, "cgroup.freeze")); got != "0" {
		t.Fatalf("cgroup.freeze %q after a freeze that timed out, want thawed", got)
	}
}

// TestFreezerHost freezes a real process in a v1 freezer cgroup: it is
// frozen (its state in /proc), then thawed.
func TestFreezerHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	f := HostFreezer()
	if f.V1 == "" {
		t.Skip("no v1 freezer hierarchy on this host (v2 is tested on a fake hierarchy)")
	}
	name := fmt.Sprintf("cove-freeze-test-%d", os.Getpid())
	dir := filepath.Join(f.V1, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = f.Thaw("/" + name)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = os.Remove(dir)
	})
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Freeze(context.Background(), "/"+name); err != nil {
		t.Fatal(err)
	}
	if frozen, err := f.Frozen("/" + name); err != nil || !frozen {
		t.Fatalf("Frozen = %v, %v after Freeze", frozen, err)
	}
	if err := f.Thaw("/" + name); err != nil {
		t.Fatal(err)
	}
	if thawed, err := f.Thawed("/" + name); err != nil || !thawed {
		t.Fatalf("Thawed = %v, %v after Thaw", thawed, err)
	}
}
