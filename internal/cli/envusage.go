package cli

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// usageLine is status.usage in one line, as `cove env get` shows it:
// "CPU 0.35 / 2 cores, throttled 1.2s; memory 412 MiB / 4 GiB; IO 1.2 GiB
// read, 300 MiB written; pids 42 / 8192; OOM kills 2; disk 3 GiB (20s
// ago)". A figure the runner does not know (a limit of 0: none; disk use
// not measured) is left out. "" without usage.
func usageLine(u *covev1.ResourceUsage, now time.Time) string {
	if u == nil {
		return ""
	}
	var parts []string
	cpu := "CPU " + cores(u.GetCpuCores())
	if l := u.GetCpuLimitCores(); l > 0 {
		cpu += " / " + cores(l)
	}
	cpu += " cores"
	if t := u.GetCpuThrottledMs(); t > 0 {
		cpu += ", throttled " + (time.Duration(t) * time.Millisecond).Round(100*time.Millisecond).String()
	}
	parts = append(parts, cpu)
	mem := "memory " + bytesIEC(u.GetMemoryBytes())
	if l := u.GetMemoryLimitBytes(); l > 0 {
		mem += " / " + bytesIEC(l)
	}
	parts = append(parts, mem)
	parts = append(parts, fmt.Sprintf("IO %s read, %s written", bytesIEC(u.GetIoReadBytes()), bytesIEC(u.GetIoWriteBytes())))
	pids := "pids " + strconv.Itoa(int(max(u.GetPids(), 0)))
	if l := u.GetPidsLimit(); l > 0 {
		pids += " / " + strconv.Itoa(int(l))
	}
	parts = append(parts, pids)
	if n := u.GetOomKills(); n > 0 {
		parts = append(parts, fmt.Sprintf("OOM kills %d", n))
	}
	if d := u.GetDiskBytes(); d > 0 {
		disk := "disk " + bytesIEC(d)
		if l := u.GetDiskLimitBytes(); l > 0 {
			disk += " / " + bytesIEC(l)
		}
		parts = append(parts, disk)
	}
	line := strings.Join(parts, "; ")
	if at := u.GetSampledAt(); at != nil {
		line += " (" + sampledAgo(at.AsTime(), now) + ")"
	}
	// Every figure is formatted here, but the runner that sent them is
	// not trusted to send sane ones.
	return termsafe.Line(line)
}

// oomLine is the last process killed for lack of memory in the
// environment and when: "postgres was killed: out of memory at 4 GiB (2m
// ago)". "" if none.
func oomLine(u *covev1.ResourceUsage, now time.Time) string {
	m := u.GetLastOomKill()
	if m == "" {
		return ""
	}
	if at := u.GetLastOomKillAt(); at != nil {
		m += " (" + sampledAgo(at.AsTime(), now) + ")"
	}
	return termsafe.Line(m)
}

// sampledAgo is how long ago a sample was taken: "20s ago", "3m ago".
func sampledAgo(at, now time.Time) string {
	d := now.Sub(at)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	}
	return "as of " + at.Local().Format(time.DateTime)
}

// cores formats a number of cores: "0.35", "2", "1.5".
func cores(c float64) string {
	if math.IsNaN(c) || math.IsInf(c, 0) || c < 0 {
		return "?"
	}
	return strconv.FormatFloat(math.Round(c*100)/100, 'f', -1, 64)
}

// bytesIEC formats a byte count with a binary unit: "412 MiB", "4 GiB",
// "1.2 GiB", "512 B".
func bytesIEC(n int64) string {
	if n < 0 {
		return "?"
	}
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	if v >= 100 || strings.HasSuffix(s, ".0") {
		s = strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	}
	return s + " " + []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}[i]
}
