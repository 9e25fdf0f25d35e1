package procgroups

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestSetupV1 makes the groups with their cpu.shares on a fake v1 cpu
// hierarchy, again without harm.
func TestSetupV1(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"cove/e1/cgroup.procs": "42\n"})
	f := FilesV1(root)
	for range 2 {
		if err := f.Setup("/cove/e1"); err != nil {
			t.Fatal(err)
		}
	}
	for g, want := range map[Group]string{Agent: "10240", Interactive: "5120", Workload: "102"} {
		if got := readFile(t, filepath.Join(root, "cove/e1", string(g), "cpu.shares")); got != want {
			t.Errorf("%s cpu.shares = %s, want %s", g, got, want)
		}
	}
	if err := f.Setup("/cove/gone"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("setup of a missing cgroup: %v, want not exist", err)
	}
}

// TestSetupV2 enables the cpu controller for the groups and sets their
// cpu.weight on a fake v2 hierarchy (this host has no v2 controllers), and
// refuses a cgroup without the cpu controller.
func TestSetupV2(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"cove/e1/cgroup.controllers":     "cpuset cpu io memory pids\n",
		"cove/e1/cgroup.subtree_control": "",
		"cove/e1/cgroup.procs":           "",
		"cove/e2/cgroup.controllers":     "memory pids\n",
		"cove/e2/cgroup.subtree_control": "",
		"cove/e2/cgroup.procs":           "",
	})
	f := FilesV2(root)
	if err := f.Setup("/cove/e1"); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "cove/e1/cgroup.subtree_control")); got != "+cpu" {
		t.Errorf("subtree_control = %q", got)
	}
	for g, want := range map[Group]string{Agent: "1000", Interactive: "500", Workload: "10"} {
		if got := readFile(t, filepath.Join(root, "cove/e1", string(g), "cpu.weight")); got != want {
			t.Errorf("%s cpu.weight = %s, want %s", g, got, want)
		}
	}
	if err := f.Setup("/cove/e2"); !errors.Is(err, ErrNoCPUController) {
		t.Errorf("setup without the cpu controller: %v", err)
	}
}

// TestProcsAndMove read and write cgroup.procs; a malformed file is an
// error, not a pid.
func TestProcsAndMove(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"cove/e1/cgroup.procs": "1\n2\n", "cove/e1/agent/cgroup.procs": "x\n",
		"cove/e1/workload/cgroup.procs": ""})
	f := FilesV1(root)
	pids, err := f.Procs("/cove/e1", Root)
	if err != nil || len(pids) != 2 || pids[0] != 1 || pids[1] != 2 {
		t.Fatalf("procs %v, %v", pids, err)
	}
	if _, err := f.Procs("/cove/e1", Agent); err == nil {
		t.Fatal("malformed cgroup.procs read")
	}
	if err := f.Move("/cove/e1", Workload, 7); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "cove/e1/workload/cgroup.procs")); got != "7" {
		t.Fatalf("workload/cgroup.procs = %q", got)
	}
}

// TestParseStat reads a stat line whose command name holds spaces and
// parentheses (a process names itself).
func TestParseStat(t *testing.T) {
	line := "4242 (evil) 1 2 3 (x) S 1 4240 4200 34816 4240 4194304 100 0 0 0 250 50 1000 20 20 0 1 0 98765 1000000 200 18446744073709551615\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.comm != "evil) 1 2 3 (x" || st.pgid != 4240 || st.sid != 4200 || st.tty != 34816 || st.start != 98765 {
		t.Fatalf("%+v", st)
	}
	if st.cpu != 3*1e9 || st.childCPU != 10200*ms {
		t.Fatalf("cpu %v child %v", st.cpu, st.childCPU)
	}
	for _, bad := range []string{"", "12 no name", "1 (x) S 1 2"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}
