package runner

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeLines appends numbered lines (tagged with tag) to w until it has
// written at least n bytes, and returns everything written.
func writeLines(t *testing.T, w io.Writer, tag string, n int) string {
	t.Helper()
	var all strings.Builder
	for i := 0; all.Len() < n; i++ {
		line := fmt.Sprintf("line %06d of the container's output (%s)\n", i, tag)
		if _, err := io.WriteString(w, line); err != nil {
			t.Fatal(err)
		}
		all.WriteString(line)
	}
	return all.String()
}

// TestCapLogKeepsNewest is R2 of the 2026-12 review: an environment can
// print without end into a log on the runner's disk. Past the cap, the
// newest part (from a line start) goes to <log>.1, the log is emptied in
// place, and the container, which keeps appending through its O_APPEND
// descriptor, goes on at the new small end: no hole, no old bytes.
func TestCapLogKeepsNewest(t *testing.T) {
	const maxBytes, keepBytes = 64 << 10, 16 << 10
	path := filepath.Join(t.TempDir(), "console.log")
	w, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// Under the cap: untouched.
	small := writeLines(t, w, "a", maxBytes/2)
	if cut, err := capLog(path, maxBytes, keepBytes); err != nil || cut != 0 {
		t.Fatalf("log under the cap: cut %d, %v", cut, err)
	}
	if b, _ := os.ReadFile(path); string(b) != small || exists(path+".1") {
		t.Fatal("a log under its cap was changed")
	}

	all := small + writeLines(t, w, "b", maxBytes)
	cut, err := capLog(path, maxBytes, keepBytes)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) == 0 || len(kept) > keepBytes || !strings.HasSuffix(all, string(kept)) {
		t.Fatalf("kept %d bytes, want the newest (at most %d)", len(kept), keepBytes)
	}
	if lineLen := len("line 000000 of the container's output (b)\n"); len(kept) <= keepBytes-lineLen {
		t.Errorf("kept %d bytes of %d: less than the newest %d bytes", len(kept), len(all), keepBytes)
	}
	if !bytes.HasPrefix(kept, []byte("line ")) {
		t.Errorf("kept part starts mid-line: %q", kept[:20])
	}
	if cut != int64(len(all)-len(kept)) {
		t.Errorf("reported %d bytes dropped, want %d", cut, len(all)-len(kept))
	}
	if fi, err := os.Stat(path + ".1"); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("rotated file mode: %v, %v", fi.Mode(), err)
	}

	after := writeLines(t, w, "c", 100)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	marker, rest, ok := strings.Cut(string(b), "\n")
	if !ok || !strings.HasPrefix(marker, "[cove] this log passed 64 KiB") || !strings.Contains(marker, "console.log.1") {
		t.Errorf("no cut notice: %q", marker)
	}
	if rest != after {
		t.Errorf("log after the cut = %q, want the new output %q", rest, after)
	}

	// A second cut replaces the rotated part.
	writeLines(t, w, "d", maxBytes)
	if _, err := capLog(path, maxBytes, keepBytes); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path + ".1"); bytes.Equal(again, kept) || len(again) > keepBytes {
		t.Error("the rotated part was not replaced by the newest")
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 2 {
		t.Errorf("files left beside the log: %v", ents)
	}
}

// TestCapLogRefusesLinks: a log replaced by a symlink (to a host file) is
// neither read nor truncated.
func TestCapLogRefusesLinks(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	content := bytes.Repeat([]byte("host data\n"), 1000)
	if err := os.WriteFile(victim, content, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "lifecycle.log")
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	if _, err := capLog(path, 100, 10); err == nil {
		t.Error("capLog followed a symlink")
	}
	if b, _ := os.ReadFile(victim); !bytes.Equal(b, content) || exists(path+".1") {
		t.Error("the symlink's target was touched")
	}
}

// TestCapLogsCoversEnvironmentLogs: the periodic check covers the
// lifecycle log, the console and every Compose service's log.
func TestCapLogsCoversEnvironmentLogs(t *testing.T) {
	dir := t.TempDir()
	r := &Runner{cfg: Config{DataDir: dir}, log: slog.New(slog.DiscardHandler)}
	lay := r.layout("e1")
	want := []string{lay.LogFile(), filepath.Join(lay.Runtime(), "console.log"), lay.ServiceLog("db"), lay.ServiceLog("web")}
	for _, p := range want {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		bw := bufio.NewWriterSize(f, 1<<20)
		writeLines(t, bw, "e", logMaxBytes+1)
		if err := errors.Join(bw.Flush(), f.Close()); err != nil {
			t.Fatal(err)
		}
	}
	got := envLogs(lay)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("logs checked: %v, want %v", got, want)
	}
	r.janitor().capLogs()
	for _, p := range want {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() > logMaxBytes {
			t.Errorf("%s not capped: %v, %v", p, fi.Size(), err)
		}
		if !exists(p + ".1") {
			t.Errorf("%s: no rotated part", p)
		}
	}
}
