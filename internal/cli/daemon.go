package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/covedev/cove/internal/build"
	"github.com/covedev/cove/internal/hostfetch"
	"github.com/covedev/cove/internal/netenv"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/runner"
	"github.com/covedev/cove/internal/runtime/container"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/store/sqlite"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// signalContext is cancelled on SIGINT or SIGTERM.
func signalContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

func newLogger() *slog.Logger {
	// BuildKit's client logs through logrus; keep its chatter (e.g. an
	// fsverity check per build) out of the daemon's log.
	logrus.SetLevel(logrus.ErrorLevel)
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel(os.Getenv("COVE_LOG_LEVEL"))}))
}

// logLevel is the daemons' log level named by COVE_LOG_LEVEL (debug, info,
// warn, error; default and anything else: info).
func logLevel(name string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(name)); err != nil {
		return slog.LevelInfo
	}
	return l
}

type serverOptions struct {
	dataDir         string
	listen          string
	runnerTimeout   time.Duration
	tlsCert, tlsKey string
	publicURL       string
	autostop        autoStopServerOptions
	limits          serverLimitOptions
	backups         serverBackupOptions // serverbackups.go
	backupGC        backupGCOptions     // serverbackupgc.go
}

func addServerFlags(cmd *cobra.Command, o *serverOptions) {
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", "/var/lib/cove", "where cove keeps its database, keys, images and environments")
	f.StringVar(&o.listen, "listen", "127.0.0.1:7780", "API listen address")
	f.DurationVar(&o.runnerTimeout, "runner-timeout", 30*time.Second, "a runner without a heartbeat for this long is INACTIVE")
	f.StringVar(&o.tlsCert, "tls-cert", "", "serve the API over HTTPS with this certificate (PEM); needs --tls-key")
	f.StringVar(&o.tlsKey, "tls-key", "", "private key (PEM) for --tls-cert")
	f.StringVar(&o.publicURL, "public-url", "", "the server's external URL, for browser logins to shared ports (default: from each request)")
	addServerLimitFlags(f, &o.limits)
	addAutoStopServerFlags(f, &o.autostop) // autostopflags.go
	addServerBackupFlags(f, &o.backups)
	addBackupGCFlags(f, &o.backupGC)
}

type runningServer struct {
	srv *server.Server
	url string
}

// startServer opens the store and serves the API (HTTP/1.1 and h2c, so
// both gRPC and curl work) until ctx ends.
func startServer(ctx context.Context, log *slog.Logger, o serverOptions, errc chan<- error) (*runningServer, error) {
	dir := filepath.Join(o.dataDir, "server")
	if err := os.MkdirAll(o.dataDir, 0o711); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "cove.db"))
	if err != nil {
		return nil, err
	}
	cfg := server.Config{Store: st, DataDir: dir, Log: log.With("component", "server"), RunnerTimeout: o.runnerTimeout, PublicURL: o.publicURL}
	o.limits.apply(&cfg)
	o.autostop.apply(&cfg)
	if err := o.backups.apply(ctx, o.dataDir, log, &cfg); err != nil {
		st.Close()
		return nil, err
	}
	gcCfg, err := o.backupGC.config()
	if err != nil {
		st.Close()
		return nil, err
	}
	srv, err := server.New(cfg)
	if err != nil {
		st.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("listen %s: %w", o.listen, err)
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		ln.Close()
		st.Close()
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	// Plain HTTP serves HTTP/1.1 and HTTP/2 with prior knowledge (gRPC);
	// TLS negotiates HTTP/2. Size and time limits: see server.NewHTTPServer.
	hs := server.NewHTTPServer(srv.Handler())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		st.Close()
	}()
	serve := func() error { return hs.Serve(ln) }
	scheme := "http"
	if o.tlsCert != "" {
		scheme = "https"
		serve = func() error { return hs.ServeTLS(ln, o.tlsCert, o.tlsKey) }
	}
	go func() {
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	go func() { _ = srv.Run(ctx) }()
	go srv.RunBackupGC(ctx, gcCfg) // backup retention and garbage collection
	url := scheme + "://" + ln.Addr().String()
	log.Info("server listening", "url", url, "data", dir)
	return &runningServer{srv: srv, url: url}, nil
}

type runnerOptions struct {
	name, server, joinToken, dataDir string
	sshListen, sshAdvertise          string
	defaultImage                     string
	runc, runcRoot, cgroupParent     string
	rangeBase                        uint32
	maxEnvs                          int
	allowLocal                       bool
	classCPUs                        int32
	classMemory                      int64
	cpuControl                       bool    // the CPU control loop (internal/cpucontrol)
	classCPUBurst                    int32   // its burst ceiling for the default class (0: the host)
	processGroups                    bool    // sort environments' processes into CPU groups (internal/procgroups)
	demoteShare                      float64 // --process-groups-demote: a terminal job's CPU share that demotes it
	classPids                        int32
	classDisk                        int64              // disk quota of the default class (0: none)
	classLimits                      runner.ClassLimits // reclaim target, swap, IO
	classesFile                      string             // --classes: every class, instead of the --class-* flags
	flags                            *pflag.FlagSet     // the command's, to tell flags set from defaults
	// networking
	network                           bool
	bridge, subnet, nftTable          string
	dnsUpstreams                      []string
	classEgress                       string
	classEgressAllow                  []string
	classEgressRate, classIngressRate int64
	// port proxy
	proxyListen, proxyURL, proxyDomain string
	metricsListen                      string // Prometheus /metrics (runner/metrics.go)
	proxyTLSCert, proxyTLSKey          string
	serverPublicURL                    string
	// Dockerfile builds
	buildkitd               string
	buildInsecureRegistries []string
	buildAllowCacheFrom     bool
	buildCPUs               float64           // --build-cpus, into buildLimits.CPUMillis
	buildLimits             runner.WorkLimits // the builder's work cgroup
	unpackCPUs              float64           // --unpack-cpus, into unpackLimits.CPUMillis
	unpackLimits            runner.WorkLimits // the image unpacker's work cgroup
	runnerCPUWeight         int               // --runner-cpu-weight: the runner's own cgroup (0: none)
	backup                  backupOptions     // --backup-* (backupchild.go)
	// auto-stop: warning lead (--autostop-warning)
	autoStopWarning time.Duration
	// image and feature fetches from the runner host
	insecureRegistries, allowPrivateFetch []string
}

// defaultClassPids is the default class's pids limit (--class-pids).
const defaultClassPids = 8192

func defaultClass(o runnerOptions) *covev1.EnvironmentClass {
	cpus, mem := o.classCPUs, o.classMemory
	// 0 means the host-derived default (a share of the host, after the
	// runner's reserve), never the whole host.
	defCPUs, defMem := resources.HostDefaultClassSize()
	if cpus == 0 {
		cpus = defCPUs
	}
	if mem == 0 {
		mem = defMem
	}
	pids := o.classPids
	switch {
	case pids == 0:
		pids = defaultClassPids
	case pids < 0:
		pids = 0 // no limit
	}
	l := o.classLimits
	return &covev1.EnvironmentClass{Id: "default", DisplayName: "Default", Cpus: cpus, MemoryBytes: mem, Pids: pids, DiskBytes: o.classDisk, Runtime: "container",
		EgressPolicy: o.classEgress, EgressAllow: o.classEgressAllow, EgressRateBits: o.classEgressRate, IngressRateBits: o.classIngressRate,
		CpuBurst: o.classCPUBurst, MemoryHighPercent: int32(l.MemoryHighPercent), SwapBytes: l.SwapBytes,
		IoReadBps: int64Rate(l.ReadBPS), IoWriteBps: int64Rate(l.WriteBPS), IoReadIops: int64Rate(l.ReadIOPS), IoWriteIops: int64Rate(l.WriteIOPS)}
}

// runRunner runs a runner until ctx ends.
func runRunner(ctx context.Context, log *slog.Logger, o runnerOptions) error {
	if os.Geteuid() != 0 {
		return errors.New("the runner must run as root: it creates user namespaces, mounts and cgroups")
	}
	if o.runnerCPUWeight < 0 || o.runnerCPUWeight > resources.MaxCPUWeight {
		return fmt.Errorf("--runner-cpu-weight %d: want 0 (off) or 1 to %d", o.runnerCPUWeight, resources.MaxCPUWeight)
	}
	classes, err := runnerClasses(o) // cpucontrol.go
	if err != nil {
		return err
	}
	cpu, cpuOn, err := cpuControl(o, classes)
	if err != nil {
		return err
	}
	if err := container.BecomeSubreaper(); err != nil {
		return err
	}
	rt, err := container.New(container.Config{RuncPath: o.runc, Root: o.runcRoot, CgroupParent: o.cgroupParent, Log: log.With("component", "runtime")})
	if err != nil {
		return err
	}
	if o.name == "" {
		o.name, _ = os.Hostname()
	}
	fetch, err := hostfetch.New(o.allowPrivateFetch, o.insecureRegistries)
	if err != nil {
		return err
	}
	hostfetch.SetDefault(fetch) // image pulls and feature downloads
	log.Info("image and feature fetches", "policy", fetch.String())
	var nm *netenv.Manager
	if o.network {
		subnet, err := netip.ParsePrefix(o.subnet)
		if err != nil {
			return fmt.Errorf("--subnet: %w", err)
		}
		nm, err = netenv.New(netenv.Config{Bridge: o.bridge, Subnet: subnet, Table: o.nftTable, DNSUpstreams: o.dnsUpstreams,
			StateDir: filepath.Join(o.dataDir, "net"), Log: log.With("component", "netenv")})
		if err != nil {
			return err
		}
	}
	r, err := runner.New(runner.Config{
		Name: o.name, ServerURL: o.server, JoinToken: o.joinToken, DataDir: o.dataDir,
		SSHListen: o.sshListen, SSHAdvertise: o.sshAdvertise, DefaultImage: o.defaultImage,
		Classes: classes, MaxEnvironments: o.maxEnvs, RangeBase: o.rangeBase,
		AllowLocalSources: o.allowLocal, Runtime: rt, Network: nm, AutoStopWarning: o.autoStopWarning,
		ProxyListen: o.proxyListen, ProxyURL: o.proxyURL, ProxyDomain: o.proxyDomain,
		ProxyTLSCert: o.proxyTLSCert, ProxyTLSKey: o.proxyTLSKey, ServerPublicURL: o.serverPublicURL,
		Buildkitd: buildkitdPath(o.buildkitd), BuildInsecureRegistries: o.buildInsecureRegistries, Runc: o.runc,
		BuildAllowCacheFrom: o.buildAllowCacheFrom, CgroupParent: o.cgroupParent, BuildLimits: buildLimits(o),
		UnpackLimits:    unpackLimits(o),
		RunnerCPUWeight: o.runnerCPUWeight,
		Backup:          backupConfig(o.backup),
		Log:             log.With("component", "runner"),
	})
	if err != nil {
		return err
	}
	if cpuOn {
		defer r.StartCPUControl(ctx, cpu)() // stops with the runner
	}
	if o.processGroups {
		defer r.StartProcessGroups(ctx, o.cgroupParent, o.demoteShare)()
	}
	stopUsage, err := r.StartUsage(ctx, runner.UsageConfig{Reader: resources.NewUsageReader(o.cgroupParent), MetricsListen: o.metricsListen})
	if err != nil {
		return err
	}
	defer stopUsage()
	return r.Run(ctx)
}

// buildkitdPath is the buildkitd to use: the flag's, else the one
// scripts/build-buildkit.sh builds, if it is there ("" = no builds).
func buildkitdPath(flag string) string {
	if flag != "" {
		return flag
	}
	if _, err := os.Stat(build.DefaultBuildkitd); err == nil {
		return build.DefaultBuildkitd
	}
	return ""
}
