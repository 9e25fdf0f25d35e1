package cli

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestUsageLine(t *testing.T) {
	now := time.Unix(1e9, 0)
	const mib, gib = 1 << 20, 1 << 30
	for _, c := range []struct {
		name string
		u    *covev1.ResourceUsage
		want string
	}{
		{"none", nil, ""},
		{"full", &covev1.ResourceUsage{SampledAt: timestamppb.New(now.Add(-20 * time.Second)), CpuCores: 0.35, CpuLimitCores: 2, CpuThrottledMs: 1234,
			MemoryBytes: 412 * mib, MemoryLimitBytes: 4 * gib, IoReadBytes: gib + gib/5, IoWriteBytes: 300 * mib, Pids: 42, PidsLimit: 8192, OomKills: 2,
			DiskBytes: 3 * gib},
			"CPU 0.35 / 2 cores, throttled 1.2s; memory 412 MiB / 4 GiB; IO 1.2 GiB read, 300 MiB written; pids 42 / 8192; OOM kills 2; disk 3 GiB (20s ago)"},
		{"no limits, nothing throttled or killed, disk not measured", &covev1.ResourceUsage{SampledAt: timestamppb.New(now.Add(-3 * time.Minute)),
			CpuCores: 1.5, MemoryBytes: 900, Pids: 3},
			"CPU 1.5 cores; memory 900 B; IO 0 B read, 0 B written; pids 3 (3m ago)"},
		// A runner is not trusted to send sane figures.
		{"nonsense figures", &covev1.ResourceUsage{CpuCores: math.NaN(), CpuLimitCores: math.Inf(1), MemoryBytes: -1, IoReadBytes: math.MinInt64, Pids: -5},
			"CPU ? / ? cores; memory ? ; IO ? read, 0 B written; pids 0"},
	} {
		got := usageLine(c.u, now)
		if c.name == "nonsense figures" {
			// The exact text matters less than no panic and no negative
			// or NaN figure shown as if it were one.
			if strings.Contains(got, "NaN") || strings.Contains(got, "Inf") || strings.Contains(got, "-") {
				t.Errorf("%s: %q", c.name, got)
			}
			continue
		}
		if got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

// TestOOMLine: the last process killed for lack of memory, with when,
// its name made safe to print.
func TestOOMLine(t *testing.T) {
	now := time.Unix(1e9, 0)
	if got := oomLine(&covev1.ResourceUsage{OomKills: 1}, now); got != "" {
		t.Errorf("no last kill: %q", got)
	}
	u := &covev1.ResourceUsage{LastOomKill: "post\x1b[2Jgres was killed: out of memory at 4 GiB", LastOomKillAt: timestamppb.New(now.Add(-2 * time.Minute))}
	if got, want := oomLine(u, now), "postgres was killed: out of memory at 4 GiB (2m ago)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestBytesIEC(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 412 << 20: "412 MiB",
		4 << 30: "4 GiB", 1<<40 + 1<<39: "1.5 TiB", math.MaxInt64: "8 EiB", -1: "?"} {
		if got := bytesIEC(n); got != want {
			t.Errorf("bytesIEC(%d) = %q, want %q", n, got, want)
		}
	}
}

// An environment whose name carries terminal escapes (set by a user of
// the same server) shows its usage without them, in get and top alike.
func TestUsagePrintedThroughTermsafe(t *testing.T) {
	now := time.Now()
	hostile := "evil\x1b]0;owned\x07\x1b[2J\tname\nSSH:         fake"
	e := &covev1.Environment{Id: "e1", Metadata: &covev1.EnvironmentMetadata{Name: hostile}, Spec: &covev1.EnvironmentSpec{},
		Status: &covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING,
			Usage: &covev1.ResourceUsage{SampledAt: timestamppb.New(now), CpuCores: 0.5, CpuLimitCores: 2, MemoryBytes: 1 << 30, Pids: 7, OomKills: 1}}}
	var b strings.Builder
	printEnv(&b, e)
	if !strings.Contains(b.String(), "Usage:       CPU 0.5 / 2 cores; memory 1 GiB; IO 0 B read, 0 B written; pids 7; OOM kills 1 (just now)\n") {
		t.Errorf("no usage line in:\n%s", b.String())
	}
	b.Reset()
	if err := renderTop(&b, map[string]*covev1.Environment{"e1": e, "e2": {Id: "e2", Metadata: &covev1.EnvironmentMetadata{Name: "idle"},
		Status: &covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED}}}, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("escape sequences reached the terminal: %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and one line per environment, got %q", out)
	}
	if f := strings.Fields(lines[1]); !strings.HasPrefix(lines[1], "evil name SSH: ") || !slices.Equal(f[len(f)-13:],
		[]string{"RUNNING", "0.5/2", "-", "1", "GiB", "0", "B", "0", "B", "7", "1", "just", "now"}) {
		t.Errorf("running environment's line %q", lines[1])
	}
	if f := strings.Fields(lines[2]); f[0] != "idle" || f[1] != "STOPPED" || f[2] != "-" {
		t.Errorf("stopped environment's line %q", lines[2])
	}
}
