package runner

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/netenv"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	iodto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

type dto = iodto.MetricFamily

// metricsRunner is a runner with workers in the given phases (running
// ones marked so).
func metricsRunner(phases map[string]covev1.EnvironmentPhase) *Runner {
	r := &Runner{log: slog.New(slog.DiscardHandler), workers: map[string]*worker{}}
	for id, p := range phases {
		r.workers[id] = &worker{r: r, id: id, reported: &covev1.EnvironmentStatus{Phase: p}, running: p == phaseRunning}
	}
	return r
}

// TestMetricsScrape scrapes /metrics over HTTP and checks each
// per-environment series against the cgroup readings, and the runner's
// phase counts.
func TestMetricsScrape(t *testing.T) {
	const gib = 1 << 30
	c := resources.Counters{CPU: 90 * time.Second, Throttled: 1500 * time.Millisecond, CPULimit: 2, Memory: gib, MemoryLimit: 4 * gib,
		IORead: 1 << 20, IOWrite: 2 << 20, Pids: 12, PidsLimit: 512, OOMKills: 3}
	f := &fakeUsage{c: map[string]resources.Counters{"envrun": c, "envstopped": {CPU: time.Hour}}}
	r := metricsRunner(map[string]covev1.EnvironmentPhase{"envrun": phaseRunning, "envstopped": phaseStopped, "envgone": phaseRunning})
	srv := httptest.NewServer(r.metricsHandler(f))
	defer srv.Close()

	env := func(name string, v float64, typ string) string {
		return fmt.Sprintf("# TYPE %s %s\n%s{env=\"envrun\"} %v\n", name, typ, name, v)
	}
	want := env("cove_environment_cpu_seconds_total", c.CPU.Seconds(), "counter") +
		env("cove_environment_cpu_throttled_seconds_total", c.Throttled.Seconds(), "counter") +
		env("cove_environment_cpu_limit_cores", c.CPULimit, "gauge") +
		env("cove_environment_memory_bytes", float64(c.Memory), "gauge") +
		env("cove_environment_memory_limit_bytes", float64(c.MemoryLimit), "gauge") +
		env("cove_environment_io_read_bytes_total", float64(c.IORead), "counter") +
		env("cove_environment_io_write_bytes_total", float64(c.IOWrite), "counter") +
		env("cove_environment_pids", float64(c.Pids), "gauge") +
		env("cove_environment_pids_limit", float64(c.PidsLimit), "gauge") +
		env("cove_environment_oom_kills_total", float64(c.OOMKills), "counter")
	names := []string{"cove_environment_cpu_seconds_total", "cove_environment_cpu_throttled_seconds_total", "cove_environment_cpu_limit_cores",
		"cove_environment_memory_bytes", "cove_environment_memory_limit_bytes", "cove_environment_io_read_bytes_total",
		"cove_environment_io_write_bytes_total", "cove_environment_pids", "cove_environment_pids_limit", "cove_environment_oom_kills_total"}
	// The help text is part of the comparison; only the values matter here.
	fams := scrape(t, srv.URL+"/metrics")
	var b strings.Builder
	for _, n := range names {
		mf, ok := fams[n]
		if !ok {
			t.Fatalf("%s missing from the scrape", n)
		}
		mf.Help = nil
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.String(); got != want {
		t.Errorf("scraped:\n%s\nwant:\n%s", got, want)
	}
	// A stopped environment's counters are not read; one whose cgroup is
	// gone is left out without an error.
	for _, mf := range fams {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "env" && l.GetValue() != "envrun" {
					t.Errorf("%s has a series for %s", mf.GetName(), l.GetValue())
				}
			}
		}
	}
	if err := promtest.ScrapeAndCompare(srv.URL+"/metrics", strings.NewReader(`
# HELP cove_runner_environments Environments on this runner by the phase it last reported.
# TYPE cove_runner_environments gauge
cove_runner_environments{phase="creating"} 0
cove_runner_environments{phase="deleted"} 0
cove_runner_environments{phase="deleting"} 0
cove_runner_environments{phase="running"} 2
cove_runner_environments{phase="starting"} 0
cove_runner_environments{phase="stopped"} 1
cove_runner_environments{phase="stopping"} 0
cove_runner_environments{phase="updating"} 0
# HELP cove_runner_usage_read_errors Running environments whose cgroup could not be read at this scrape.
# TYPE cove_runner_usage_read_errors gauge
cove_runner_usage_read_errors 0
`), "cove_runner_environments", "cove_runner_usage_read_errors"); err != nil {
		t.Error(err)
	}
	// The runner's own process is there (its CPU and memory).
	if _, ok := fams["process_resident_memory_bytes"]; !ok {
		t.Error("process_resident_memory_bytes missing")
	}

	// Only GET /metrics: other paths and methods learn nothing.
	for _, req := range []struct{ method, path string }{{"GET", "/"}, {"GET", "/debug/pprof/"}, {"POST", "/metrics"}} {
		hr, err := http.NewRequest(req.method, srv.URL+req.path, nil)
		must(t, err)
		resp, err := srv.Client().Do(hr)
		must(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || strings.Contains(string(body), "envrun") {
			t.Errorf("%s %s: %s, %q", req.method, req.path, resp.Status, body)
		}
	}
}

// scrape GETs url and parses the text exposition.
func scrape(t *testing.T, url string) map[string]*dto {
	t.Helper()
	resp, err := http.Get(url)
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	must(t, err)
	return fams
}

// The metrics listener is never the environments' bridge; a bad address
// is refused with the flag's name.
func TestMetricsListenRefused(t *testing.T) {
	// A manager whose bridge would be 127.0.0.1: New only reads its state
	// directory, it changes nothing on the host.
	nm, err := netenv.New(netenv.Config{Bridge: "cove-test0", Subnet: netip.MustParsePrefix("127.0.0.0/24"), StateDir: t.TempDir(),
		Log: slog.New(slog.DiscardHandler)})
	must(t, err)
	for _, c := range []struct{ listen, want string }{
		{"127.0.0.1:0", "environments' bridge"},
		{"9464", "want HOST:PORT"},
	} {
		r := &Runner{cfg: Config{Network: nm}, log: slog.New(slog.DiscardHandler)}
		cl, err := r.startMetrics(c.listen, nil)
		if err == nil {
			cl.Close()
			t.Errorf("%s: served", c.listen)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "metrics-listen") {
			t.Errorf("%s: unclear error %v", c.listen, err)
		}
	}
	// Off by default.
	r := &Runner{cfg: Config{}, log: slog.New(slog.DiscardHandler)}
	cl, err := r.startMetrics("", nil)
	must(t, err)
	must(t, cl.Close())
}

// TestMetricsRealCgroup: a busy process in an environment's cgroup (made
// as the container runtime makes a Compose environment's: the group's
// cgroup with limits, the process in a cgroup below) shows CPU time in a
// scrape. Needs root.
func TestMetricsRealCgroup(t *testing.T) {
	testutil.RequireRoot(t, "to create cgroups")
	parent := fmt.Sprintf("cove-metricstest-%d", rand.Uint32())
	envCg := resources.CgroupPath(parent, "env1")
	leaf := envCg + "/c1"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer cancel()
		for _, p := range []string{leaf, envCg, "/" + parent} {
			if err := resources.Remove(ctx, p); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	must(t, resources.Create(envCg, resources.Limits{CPUMillis: 1500, Pids: 100}))
	dirs := cgroupDirs(t, leaf)
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	must(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	// Registered after the cgroup cleanup, so it runs first: the cgroups
	// are empty when they are removed.
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	for _, d := range dirs {
		must(t, os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644))
	}

	r := metricsRunner(map[string]covev1.EnvironmentPhase{"env1": phaseRunning})
	srv := httptest.NewServer(r.metricsHandler(resources.NewUsageReader(parent)))
	defer srv.Close()
	value := func(fams map[string]*dto, name string) float64 {
		for _, m := range fams[name].GetMetric() {
			if m.GetLabel()[0].GetValue() == "env1" {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
		t.Fatalf("%s has no series for env1", name)
		return 0
	}
	var fams map[string]*dto
	testutil.WaitFor(t, "the busy process's CPU time in a scrape", func() bool {
		fams = scrape(t, srv.URL+"/metrics")
		return value(fams, "cove_environment_cpu_seconds_total") > 0
	})
	if v := value(fams, "cove_environment_cpu_limit_cores"); v != 1.5 {
		t.Errorf("CPU limit scraped as %v cores, want 1.5", v)
	}
	if v := value(fams, "cove_environment_pids"); v < 1 {
		t.Errorf("pids scraped as %v, want the busy process counted", v)
	}
	if v := value(fams, "cove_environment_pids_limit"); v != 100 {
		t.Errorf("pids limit scraped as %v, want 100", v)
	}
}

// cgroupDirs makes the cgroup p in every hierarchy the usage reader reads
// (v1: one directory per controller; v2: one) and returns its directories.
func cgroupDirs(t *testing.T, p string) []string {
	t.Helper()
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		d := filepath.Join("/sys/fs/cgroup", p)
		must(t, os.Mkdir(d, 0o755))
		return []string{d}
	}
	var dirs []string
	seen := map[string]bool{}
	for _, ctrl := range []string{"cpu", "cpuacct", "memory", "pids", "blkio"} {
		base, err := filepath.EvalSymlinks(filepath.Join("/sys/fs/cgroup", ctrl))
		if err != nil || seen[base] {
			continue // not mounted, or co-mounted with one done already
		}
		seen[base] = true
		d := filepath.Join(base, p)
		must(t, os.Mkdir(d, 0o755))
		dirs = append(dirs, d)
	}
	if len(dirs) == 0 {
		t.Skip("no cgroup v1 controllers mounted")
	}
	return dirs
}
