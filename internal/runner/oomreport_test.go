package runner

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/resources"
)

func TestOOMMessage(t *testing.T) {
	for _, c := range []struct {
		task  string
		limit int64
		want  string
	}{
		{"postgres", 4 << 30, "postgres was killed: out of memory at 4 GB"},
		{"dd", 64 << 20, "dd was killed: out of memory at 64 MB"},
		{"java", 0, "java was killed: out of memory"},
	} {
		if got := oomMessage(c.task, c.limit); got != c.want {
			t.Errorf("oomMessage(%q, %d) = %q, want %q", c.task, c.limit, got, c.want)
		}
	}
	// A process named with a terminal escape and a newline cannot forge
	// lines or drive the reader's terminal.
	got := oomMessage("x\x1b]0;pwned\x07\nfake", 1<<30)
	if strings.ContainsAny(got, "\x1b\x07\n") {
		t.Errorf("unsafe name printed as is: %q", got)
	}
}

// TestReportOOMKillAttribution: a kill is written to the log of the
// environment whose cgroup it happened in, never a neighbour's, even when
// a cgroup made inside the environment is named after the neighbour.
func TestReportOOMKillAttribution(t *testing.T) {
	dir := t.TempDir()
	r := &Runner{cfg: Config{DataDir: dir}, log: slog.New(slog.DiscardHandler), workers: map[string]*worker{}}
	for _, id := range []string{"envA", "envB"} {
		r.workers[id] = &worker{r: r, id: id}
		if err := os.MkdirAll(r.layout(id).LogDir(), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// envA has written no log yet: the kill starts it.
	if err := os.WriteFile(r.layout("envB").LogFile(), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r.reportOOMKill(resources.OOMKill{Cgroup: "/cove/envA/envB", Task: "hog", PID: 7})
	r.reportOOMKill(resources.OOMKill{Cgroup: "/cove/elsewhere", Task: "other", PID: 8}) // not ours
	read := func(id string) string {
		b, err := os.ReadFile(r.layout(id).LogFile())
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if a := read("envA"); !strings.Contains(a, "hog was killed: out of memory") || strings.Count(a, "\n") != 1 {
		t.Errorf("envA's log: %q, want the kill", a)
	}
	if b := read("envB"); b != "" {
		t.Errorf("envB's log: %q, want nothing", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "envs", "elsewhere")); err == nil {
		t.Error("a log was made for a cgroup that is no environment of this runner")
	}
}
