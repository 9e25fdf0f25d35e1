package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestFsyncPrintsEachLatencyAndRemovesItsFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	var out bytes.Buffer
	if err := fsyncMain([]string{"-file", file, "-n", "5", "-size", "512", "-gap", "0"}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(out.String())
	if len(lines) != 5 {
		t.Fatalf("%d lines, want 5: %q", len(lines), out.String())
	}
	for _, l := range lines {
		if n, err := strconv.ParseInt(l, 10, 64); err != nil || n <= 0 {
			t.Errorf("line %q is not a positive latency in nanoseconds", l)
		}
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("the probe's file is left: %v", err)
	}
}

// The write mode answers marks while its writers run, keeps the disk
// space bounded, and at the end of its input stops, reports and removes
// its files.
func TestWriteMarksStopsAndRemovesItsFiles(t *testing.T) {
	dir := t.TempDir()
	const writers, block, fileSize, fsyncEvery = 2, 4096, 16384, 8192
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := writeMain([]string{"-dir", dir, "-writers", strconv.Itoa(writers), "-block", strconv.Itoa(block),
			"-file-size", strconv.Itoa(fileSize), "-keep", "1", "-fsync-every", strconv.Itoa(fsyncEvery)}, inR, outW)
		outW.Close()
		done <- err
	}()
	lines := bufio.NewScanner(outR)
	next := func(what string) []int64 {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("no %s line: %v", what, lines.Err())
		}
		f := strings.Fields(lines.Text())
		if len(f) != 4 || f[0] != what {
			t.Fatalf("line %q, want %s and three numbers", lines.Text(), what)
		}
		var v []int64
		for _, s := range f[1:] {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				t.Fatalf("line %q: %v", lines.Text(), err)
			}
			v = append(v, n)
		}
		return v
	}
	// Until every writer must have moved on to new files several times.
	var last []int64
	for last == nil || last[1] < 8*writers*fileSize {
		if _, err := io.WriteString(inW, "mark\n"); err != nil {
			t.Fatal(err)
		}
		m := next("mark")
		if last != nil && (m[0] < last[0] || m[1] < last[1]) {
			t.Fatalf("mark %v went back from %v", m, last)
		}
		last = m
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		// Each writer: its kept file and the one it writes.
		if len(ents) > writers*2 {
			t.Fatalf("%d files, want at most %d: the writers do not remove old files", len(ents), writers*2)
		}
	}
	inW.Close()
	d := next("done")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d[1] < last[1] {
		t.Errorf("done wrote %d, less than the last mark's %d", d[1], last[1])
	}
	if d[2] > d[1] || d[2] < d[1]-writers*fsyncEvery {
		t.Errorf("done: %d bytes synced of %d written; each writer leaves less than %d unsynced", d[2], d[1], fsyncEvery)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("%d files left after the end", len(ents))
	}
}

func TestBadArgumentsAreRefused(t *testing.T) {
	if err := fsyncMain([]string{"-n", "3"}, io.Discard); err == nil {
		t.Error("fsync without -file: no error")
	}
	if err := writeMain([]string{"-dir", t.TempDir(), "-file-size", "1", "-block", "2"}, strings.NewReader(""), io.Discard); err == nil {
		t.Error("write with -file-size < -block: no error")
	}
}
