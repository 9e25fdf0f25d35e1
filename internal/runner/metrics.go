package runner

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/covedev/cove/internal/resources"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Prometheus metrics on the runner: UsageConfig.MetricsListen serves /metrics
// (off by default). Environments are labelled by id only: ids are opaque,
// names are their owners' words. Per-environment figures are read from the
// cgroups at each scrape, one scrape at a time; counters start again from
// zero when an environment restarts, which Prometheus' rate() expects.

var (
	envLabel = []string{"env"}

	descCPU       = prometheus.NewDesc("cove_environment_cpu_seconds_total", "CPU time used by the environment (all its containers) since it started.", envLabel, nil)
	descThrottled = prometheus.NewDesc("cove_environment_cpu_throttled_seconds_total", "Time the environment's processes were runnable but held back by its CPU quota, since it started.", envLabel, nil)
	descCPULimit  = prometheus.NewDesc("cove_environment_cpu_limit_cores", "The environment's current CPU quota in cores (0: none).", envLabel, nil)
	descMemory    = prometheus.NewDesc("cove_environment_memory_bytes", "Memory the environment uses, without the page cache the kernel can drop at once.", envLabel, nil)
	descMemLimit  = prometheus.NewDesc("cove_environment_memory_limit_bytes", "The environment's memory limit (0: none).", envLabel, nil)
	descIORead    = prometheus.NewDesc("cove_environment_io_read_bytes_total", "Bytes the environment read from block devices since it started.", envLabel, nil)
	descIOWrite   = prometheus.NewDesc("cove_environment_io_write_bytes_total", "Bytes the environment wrote to block devices since it started.", envLabel, nil)
	descPids      = prometheus.NewDesc("cove_environment_pids", "Tasks (processes and threads) in the environment.", envLabel, nil)
	descPidsLimit = prometheus.NewDesc("cove_environment_pids_limit", "The environment's task limit (0: none).", envLabel, nil)
	descOOMKills  = prometheus.NewDesc("cove_environment_oom_kills_total", "Processes the kernel killed in the environment for lack of memory since it started.", envLabel, nil)
	descPhase     = prometheus.NewDesc("cove_runner_environments", "Environments on this runner by the phase it last reported.", []string{"phase"}, nil)
	descReadErr   = prometheus.NewDesc("cove_runner_usage_read_errors", "Running environments whose cgroup could not be read at this scrape.", nil, nil)
)

// usageCollector collects the runner's environment metrics.
type usageCollector struct {
	r     *Runner
	usage UsageReader // nil: no per-environment metrics
	mu    sync.Mutex  // one scrape reads the cgroups at a time
}

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCPU, descThrottled, descCPULimit, descMemory, descMemLimit,
		descIORead, descIOWrite, descPids, descPidsLimit, descOOMKills, descPhase, descReadErr, descDisk, descDiskLimit} {
		ch <- d
	}
}

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	phases := map[covev1.EnvironmentPhase]int{}
	for p := range covev1.EnvironmentPhase_name {
		if p != 0 {
			phases[covev1.EnvironmentPhase(p)] = 0
		}
	}
	readErrs := 0
	for _, w := range c.r.workerList() {
		w.mu.Lock()
		phase, running := w.reported.GetPhase(), w.running
		w.mu.Unlock()
		if phase != 0 {
			phases[phase]++
		}
		if !running || c.usage == nil {
			continue
		}
		u, err := c.usage.Read(w.id)
		if err != nil {
			if !errors.Is(err, resources.ErrNoCgroup) {
				readErrs++
				c.r.log.Debug("usage not read for metrics", "env", w.id, "err", err)
			}
			continue
		}
		collectCounters(ch, w.id, u)
		collectDisk(ch, c.r, w.id) // disk.go
	}
	for p, n := range phases {
		ch <- prometheus.MustNewConstMetric(descPhase, prometheus.GaugeValue, float64(n), strings.ToLower(metricPhase(p)))
	}
	ch <- prometheus.MustNewConstMetric(descReadErr, prometheus.GaugeValue, float64(readErrs))
}

func collectCounters(ch chan<- prometheus.Metric, id string, u resources.Counters) {
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, id)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, id)
	}
	counter(descCPU, u.CPU.Seconds())
	counter(descThrottled, u.Throttled.Seconds())
	gauge(descCPULimit, u.CPULimit)
	gauge(descMemory, float64(u.Memory))
	gauge(descMemLimit, float64(u.MemoryLimit))
	counter(descIORead, float64(u.IORead))
	counter(descIOWrite, float64(u.IOWrite))
	gauge(descPids, float64(u.Pids))
	gauge(descPidsLimit, float64(u.PidsLimit))
	counter(descOOMKills, float64(u.OOMKills))
}

// metricPhase is "RUNNING" for ENVIRONMENT_PHASE_RUNNING.
func metricPhase(p covev1.EnvironmentPhase) string {
	return strings.TrimPrefix(p.String(), "ENVIRONMENT_PHASE_")
}

// metricsHandler serves the runner's metrics, its own process's included,
// from a registry of its own. Scrapes beyond two at a time are refused
// (503): whoever can reach the listener gets bounded work.
func (r *Runner) metricsHandler(u UsageReader) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&usageCollector{r: r, usage: u},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{MaxRequestsInFlight: 2, Timeout: 30 * time.Second}))
	return mux
}

// startMetrics serves /metrics on listen, if set. It refuses the
// environments' bridge address: environments must not learn about their
// neighbours.
func (r *Runner) startMetrics(listen string, u UsageReader) (io.Closer, error) {
	if listen == "" {
		return io.NopCloser(nil), nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %q: want HOST:PORT, e.g. 127.0.0.1:9464: %w", listen, err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	if n := r.cfg.Network; n != nil {
		if ip, ok := netip.AddrFromSlice(addr.IP); ok && ip.Unmap() == n.BridgeIP() {
			ln.Close()
			return nil, fmt.Errorf("--metrics-listen %s is the environments' bridge: environments would see each other's figures; listen on 127.0.0.1 or a management address", listen)
		}
	}
	if host == "" || addr.IP.IsUnspecified() {
		r.log.Warn("metrics served on every address of this host: environment ids and usage are visible to whoever reaches it (environments themselves are kept out by the firewall)", "addr", addr.String())
	}
	hs := &http.Server{Handler: r.metricsHandler(u), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 40 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 8 << 10}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("metrics", "err", err)
		}
	}()
	r.log.Info("metrics listening", "url", "http://"+addr.String()+"/metrics")
	return hs, nil
}
