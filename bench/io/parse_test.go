package main

import (
	"testing"
	"time"
)

func TestParseMark(t *testing.T) {
	m, err := parseMark("mark 1500000000 4194304 2097152", "mark")
	if err != nil {
		t.Fatal(err)
	}
	if want := (mark{at: 1500 * time.Millisecond, written: 4 << 20, synced: 2 << 20}); m != want {
		t.Errorf("got %+v, want %+v", m, want)
	}
	for _, bad := range []string{"done 1 2 3", "mark 1 2", "mark 1 2 x", "mark 1 -2 3", "ioprobe: no space left on device"} {
		if _, err := parseMark(bad, "mark"); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseLatencies(t *testing.T) {
	lat, err := parseLatencies([]byte("1000\n2500000\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(lat) != 2 || lat[0] != time.Microsecond || lat[1] != 2500*time.Microsecond {
		t.Errorf("got %v", lat)
	}
	if _, err := parseLatencies([]byte("1000\nioprobe: fsync: input/output error\n")); err == nil {
		t.Error("an error line among the latencies: no error")
	}
}

func TestParseDiskWritten(t *testing.T) {
	// /sys/block/vda/stat: the 7th field is sectors written.
	b := []byte("   12345  100  999000  5000  67890  300  2048  7000  0  9000  12000  0  0  0  0  0  0\n")
	n, err := parseDiskWritten(b)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2048*512 {
		t.Errorf("got %d bytes, want %d", n, 2048*512)
	}
	if _, err := parseDiskWritten([]byte("1 2 3")); err == nil {
		t.Error("a short stat: no error")
	}
}

func TestDirtyThreshold(t *testing.T) {
	meminfo := []byte("MemTotal:       24000000 kB\nMemFree:        20000000 kB\nMemAvailable:   10000000 kB\n")
	const avail = 10000000 << 10
	for _, c := range []struct {
		name       string
		dirtyBytes string
		limit      uint64
		v2         bool
		want       int64
	}{
		{"ratio of the available memory", "0", 0, false, avail / 100 * 20},
		{"v1 ignores the cgroup's limit", "0", 1 << 30, false, avail / 100 * 20},
		{"v2 takes the cgroup's limit when lower", "0", 1 << 30, true, (1 << 30) / 100 * 20},
		{"v2, a higher limit", "0", 1 << 40, true, avail / 100 * 20},
		{"dirty_bytes wins", "300000000", 0, true, 300000000},
	} {
		got, err := dirtyThreshold(meminfo, []byte("20\n"), []byte(c.dirtyBytes+"\n"), c.limit, c.v2)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
		} else if got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	if _, err := dirtyThreshold([]byte("MemTotal: 1 kB\n"), []byte("20"), []byte("0"), 0, false); err == nil {
		t.Error("no MemAvailable: no error")
	}
}

func TestActiveScheduler(t *testing.T) {
	for in, want := range map[string]string{
		"none [mq-deadline] kyber bfq\n": "mq-deadline",
		"[none] mq-deadline\n":           "none",
		"noop\n":                         "noop",
		"":                               "unknown",
	} {
		if got := activeScheduler(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
