package main

import (
	"bufio"
	"strings"
	"testing"
	"time"
)

func TestParseChildCPU(t *testing.T) {
	// A command with spaces and a ')' of its own; utime 250, stime 50,
	// cutime 120, cstime 30 ticks.
	line := []byte("1234 (we (ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 120 30 20 0 12 0 100 1000000 200\n")
	got, err := parseChildCPU(line)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1500 * time.Millisecond; got != want {
		t.Errorf("child CPU = %s, want %s", got, want)
	}
	for _, bad := range []string{"1234 no command", "1234 (x) S 1 2 3", "1234 (x) S 1 1 1 0 -1 0 0 0 0 0 1 1 u s"} {
		if _, err := parseChildCPU([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseGoroutines(t *testing.T) {
	text := "# HELP go_goroutines Number of goroutines that currently exist.\n# TYPE go_goroutines gauge\ngo_goroutines 412\ngo_threads 12\n"
	n, err := parseGoroutines(bufio.NewScanner(strings.NewReader(text)))
	if err != nil || n != 412 {
		t.Errorf("parseGoroutines = %d, %v; want 412", n, err)
	}
	if _, err := parseGoroutines(bufio.NewScanner(strings.NewReader("go_threads 12\n"))); err == nil {
		t.Error("no go_goroutines line: no error")
	}
}
