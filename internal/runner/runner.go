// Package runner turns the environments the server assigns to this host into
// isolated, running machines. It connects outbound to the server, watches its
// assignments, and runs one idempotent reconcile loop per environment:
// observe what exists on the host, plan the next steps, apply them, report
// status. Environments keep running while the runner restarts; a new runner
// process adopts them from what it finds on disk and in the runtime.
package runner

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/content"
	"github.com/covedev/cove/internal/diskquota"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/netenv"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/sshgw"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"golang.org/x/crypto/ssh"
)

// Config configures a runner.
type Config struct {
	Name      string
	ServerURL string
	// JoinToken is used once, when the data dir holds no runner credentials.
	JoinToken string
	DataDir   string
	// SSHListen is the gateway's listen address; SSHAdvertise is the address
	// users are told to dial (defaults to the listener's address).
	SSHListen, SSHAdvertise string
	DefaultImage            string
	// Classes are the environment classes this runner offers, each with
	// its whole resource definition (size, burst ceiling, reclaim target,
	// swap, block IO: classlimits.go).
	Classes         []*covev1.EnvironmentClass
	MaxEnvironments int
	// Host uid/gid ranges for environments: Slots ranges of RangeSize ids
	// starting at RangeBase.
	RangeBase, RangeSize uint32
	RangeSlots           int
	StopGrace            time.Duration
	// AutoStopWarning is how long before an automatic stop open terminals
	// are warned (at most half the timeout; 0: DefaultAutoStopWarning).
	AutoStopWarning time.Duration
	// AllowLocalSources lets environments clone a local path on this host
	// (read as root). Only `cove up`, where the user is the operator, sets it.
	AllowLocalSources bool
	// HTTP port proxy: listen address, the base URL users reach it on
	// (default http://<listen address>), an optional wildcard domain for the
	// host form, optional TLS, and the server's external URL for browser
	// logins (default ServerURL).
	ProxyListen, ProxyURL, ProxyDomain string
	ProxyTLSCert, ProxyTLSKey          string
	ServerPublicURL                    string
	// Buildkitd, if set, lets environments build devcontainer.json
	// Dockerfiles (BuildKit, in a network namespace of its own);
	// BuildInsecureRegistries are registries it reaches over plain HTTP.
	Buildkitd               string
	BuildInsecureRegistries []string
	// BuildAllowCacheFrom lets build.cacheFrom import registry build cache
	// into the builder's cache, which every organization shares.
	BuildAllowCacheFrom bool
	// CgroupParent is the runtime's cgroup parent. With BuildLimits set,
	// the builder (buildkitd and its RUN steps) runs in a cgroup of its own
	// below it with those limits (workcgroup.go); nil: unlimited.
	CgroupParent string
	BuildLimits  *WorkLimits
	// UnpackLimits, with CgroupParent, has image layers unpacked by a
	// child process (AgentBinary internal-unpack-layer) in a cgroup of its
	// own with these limits (unpack.go); nil: in the runner's process.
	UnpackLimits *WorkLimits
	// RunnerCPUWeight, with CgroupParent, runs the runner process in a
	// cgroup of its own next to it with this CPU weight (v2 scale;
	// selfcgroup.go); 0: where it was started.
	RunnerCPUWeight int
	// Backup configures backups and restores (backup.go).
	Backup BackupConfig
	// Runc is the OCI runtime Dockerfile builds use (as environments do).
	Runc string
	// AgentBinary is the static cove binary mounted into environments
	// (default: this executable).
	AgentBinary string
	Runtime     runtime.Runtime
	// Network gives environments a bridge, NAT and policy; nil means
	// loopback-only environments.
	Network    *netenv.Manager
	HTTPClient *http.Client
	Log        *slog.Logger
	// classLimits are the classes' limits checked, with the disk IO
	// limits apply to (New fills it in).
	classLimits classLimits
	// diskQuotas are the disk sizes of the classes with a disk limit
	// (disk.go; New fills them in).
	diskQuotas diskQuotas
}

// Runner is one runner process.
type Runner struct {
	cfg      Config
	log      *slog.Logger
	images   imageStore
	rt       runtime.Runtime
	net      envNet
	agents   agentDialer
	clock    clock
	classes  classes
	steps    map[step]stepper // what each planned step does (steps.go)
	ranges   *rangeAllocator
	gw       *sshgw.Gateway
	keys     *agentKeys // each container's agent keys
	hostKey  ssh.Signer
	client   *client
	sshAddr  string
	pool     *agentclient.Pool
	proxyURL string
	builds   *builders // the Dockerfile builder, made at the first build
	gc       *gcLock
	bk       *backups // backup.go

	mu      sync.Mutex
	workers map[string]*worker
}

// New prepares a runner: data directories, keys, image store, and the uid
// ranges of environments already on disk.
func New(cfg Config) (*Runner, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.RangeSize == 0 {
		cfg.RangeSize = 65536
	}
	if cfg.RangeBase == 0 {
		cfg.RangeBase = 1 << 24
	}
	if cfg.RangeSlots == 0 {
		cfg.RangeSlots = 1024
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = 10 * time.Second
	}
	if cfg.MaxEnvironments == 0 {
		cfg.MaxEnvironments = 32
	}
	if cfg.AgentBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find own executable: %w", err)
		}
		cfg.AgentBinary = exe
	}
	if cfg.ServerPublicURL == "" {
		cfg.ServerPublicURL = cfg.ServerURL
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Runtime == nil {
		return nil, errors.New("runner: no runtime configured")
	}
	// Environments' unprivileged uids must traverse to their own directories;
	// the image store is only read by root (overlayfs reads lower layers with
	// the mounter's credentials), so it stays private: its layers keep their
	// setuid binaries and device nodes.
	for d, mode := range map[string]os.FileMode{cfg.DataDir: 0o711, filepath.Join(cfg.DataDir, "envs"): 0o711, filepath.Join(cfg.DataDir, "images"): 0o700} {
		if err := os.MkdirAll(d, mode); err != nil {
			return nil, err
		}
		if err := os.Chmod(d, mode); err != nil {
			return nil, err
		}
	}
	if err := checkTraversable(cfg.DataDir); err != nil {
		return nil, err
	}
	var err error
	if cfg.diskQuotas, err = newDiskQuotas(cfg.Classes, diskquota.Check); err != nil { // before withDisk sizes every class
		return nil, err
	}
	classes, err := withDisk(cfg.Classes, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.Classes = withLimitDefaults(classes)
	if cfg.classLimits, err = newClassLimits(cfg.Classes, cfg.DataDir); err != nil {
		return nil, err
	}
	if w := cfg.classLimits.swapWarning(); w != "" {
		cfg.Log.Warn(w)
	}
	images, err := image.NewStore(filepath.Join(cfg.DataDir, "images"), cfg.Log.With("component", "images"))
	if err != nil {
		return nil, err
	}
	if cfg.CgroupParent != "" && cfg.UnpackLimits != nil {
		images.SetUnpacker(limitedUnpacker(cfg.Log.With("component", "images"), cfg.AgentBinary, cfg.CgroupParent, cfg.DataDir, *cfg.UnpackLimits))
	}
	hostKey, err := sshgw.LoadOrCreateKey(filepath.Join(cfg.DataDir, "ssh_host_ed25519_key"), "cove gateway host key")
	if err != nil {
		return nil, fmt.Errorf("gateway host key: %w", err)
	}
	keys, err := loadAgentKeys(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	d := deps{images: hostImages{images}, net: loopbackNetwork{}, pool: agentclient.NewPool(), clock: realClock{},
		clone: content.Clone, chown: content.Chown,
		stager: func(ws, dir string) (binder, error) { return newStager(ws, dir) }}
	if cfg.Network != nil {
		d.net = cfg.Network
	}
	d.agents = agentPool{d.pool}
	return newRunner(cfg, d, keys, hostKey)
}

// deps are the runner's collaborators on the host (deps.go): New wires the
// real ones, tests fakes.
type deps struct {
	images imageStore
	net    network
	agents agentDialer
	pool   *agentclient.Pool
	clock  clock
	clone  cloner
	chown  func(ctx context.Context, dir string, m idmap.Range, uid, gid uint32) error
	stager func(workspace, dir string) (binder, error)
}

// newRunner is the composition root: the runner, its steps and what they
// use, from cfg (defaults applied) and d.
func newRunner(cfg Config, d deps, keys *agentKeys, hostKey ssh.Signer) (*Runner, error) {
	if d.pool == nil {
		d.pool = agentclient.NewPool()
	}
	if d.stager == nil {
		d.stager = func(ws, dir string) (binder, error) { return newStager(ws, dir) }
	}
	r := &Runner{
		cfg: cfg, log: cfg.Log, images: d.images, rt: cfg.Runtime, keys: keys, hostKey: hostKey,
		net: envNet{n: d.net, classes: cfg.Classes}, agents: d.agents, clock: d.clock, classes: cfg.Classes,
		ranges:  newRangeAllocator(cfg.RangeBase, cfg.RangeSize, cfg.RangeSlots),
		pool:    d.pool,
		gc:      &gcLock{},
		workers: map[string]*worker{},
		builds:  &builders{cfg: cfg, net: d.net, classes: cfg.Classes, log: cfg.Log},
	}
	r.bk = newBackups(cfg, cfg.Log.With("component", "backup"))
	r.steps = r.makeSteps(d)
	r.gw = sshgw.NewGateway(sshgw.Config{HostSigner: hostKey, Resolver: r, Log: cfg.Log.With("component", "sshgw")})
	r.gw.SetSessions(runnerSessions{r}) // activity.go
	if err := r.loadRanges(); err != nil {
		return nil, err
	}
	if err := r.ranges.reserve(builderNetID, builderRange(cfg)); err != nil {
		return nil, fmt.Errorf("builder uid range: %w", err)
	}
	return r, nil
}

// loadRanges re-reserves the uid ranges of environments on disk.
func (r *Runner) loadRanges() error {
	ents, err := os.ReadDir(filepath.Join(r.cfg.DataDir, "envs"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		lay := envdir.Layout{Dir: filepath.Join(r.cfg.DataDir, "envs", e.Name())}
		st, err := loadState(lay.State())
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			// Its container may still run with its uid range: never hand
			// that range to another environment.
			m, ok := r.recoverRange(lay)
			r.log.Error("environment state unreadable; leaving it alone", "env", e.Name(), "err", err, "range", m, "rangeKnown", ok)
			if ok {
				if err := r.ranges.reserve(e.Name(), m); err != nil {
					return err
				}
			}
			continue
		}
		if err := r.ranges.reserve(st.ID, st.IDMap); err != nil {
			return err
		}
	}
	return nil
}

// Run serves the SSH gateway and keeps the session with the server until
// ctx is done. Environments keep running when it returns.
func (r *Runner) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", r.cfg.SSHListen)
	if err != nil {
		return fmt.Errorf("ssh gateway: %w", err)
	}
	r.sshAddr = r.cfg.SSHAdvertise
	if r.sshAddr == "" {
		r.sshAddr = advertiseAddr(ln.Addr().(*net.TCPAddr))
	}
	r.log.Info("ssh gateway listening", "addr", ln.Addr().String(), "advertise", r.sshAddr)
	// Rebuilds the bridge, rules and DNS relay; running environments'
	// namespaces are untouched.
	if err := r.net.n.Start(ctx); err != nil {
		ln.Close()
		return fmt.Errorf("network: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.net.n.Close(cctx); err != nil {
			r.log.Warn("network close", "err", err)
		}
	}()
	defer r.builds.stop()
	c, err := r.connect(ctx)
	if err != nil {
		ln.Close()
		return err
	}
	r.client = c
	proxy, err := r.startProxy(ctx)
	if err != nil {
		ln.Close()
		return err
	}
	defer proxy.Close()
	defer r.pool.Close()
	j := r.janitor()
	leaveCgroup := r.enterSelfCgroup() // selfcgroup.go
	defer leaveCgroup()
	j.limitEnvironmentsMemory()          // cgroupparent.go
	if err := r.sweep(ctx); err != nil { // sweep.go: before any worker adopts
		r.log.Warn("start-up sweep", "err", err)
	}
	r.thawAll() // backup.go: what a runner killed mid-backup left frozen
	oomDone := make(chan struct{})
	go func() { defer close(oomDone); r.oomLoop(ctx) }() // oomreport.go
	defer func() { <-oomDone }()
	var wg sync.WaitGroup
	wg.Add(5)
	go func() { defer wg.Done(); _ = r.gw.Serve(ctx, ln) }()
	go func() { defer wg.Done(); r.heartbeatLoop(ctx) }()
	go func() { defer wg.Done(); r.watchLoop(ctx) }()
	go func() { defer wg.Done(); j.gcLoop(ctx) }()     // gc.go
	go func() { defer wg.Done(); j.logCapLoop(ctx) }() // logcap.go
	wg.Wait()
	r.mu.Lock()
	for _, w := range r.workers {
		w.cancel()
	}
	r.mu.Unlock()
	r.builds.stop()        // its work cgroup is below the cgroup parent
	leaveCgroup()          // the runner's own (selfcgroup.go)
	j.removeCgroupParent() // cgroupparent.go
	return nil
}

// startProxy serves the HTTP port proxy, if configured.
func (r *Runner) startProxy(ctx context.Context) (io.Closer, error) {
	if r.cfg.ProxyListen == "" {
		return io.NopCloser(nil), nil
	}
	if (r.cfg.ProxyTLSCert == "") != (r.cfg.ProxyTLSKey == "") {
		return nil, errors.New("port proxy: --proxy-tls-cert and --proxy-tls-key go together")
	}
	if r.cfg.ProxyTLSCert != "" {
		// Fail now rather than serve nothing while advertising https.
		if _, err := tls.LoadX509KeyPair(r.cfg.ProxyTLSCert, r.cfg.ProxyTLSKey); err != nil {
			return nil, fmt.Errorf("port proxy TLS: %w", err)
		}
	}
	ln, err := net.Listen("tcp", r.cfg.ProxyListen)
	if err != nil {
		return nil, fmt.Errorf("port proxy: %w", err)
	}
	scheme := "http"
	if r.cfg.ProxyTLSCert != "" {
		scheme = "https"
	}
	r.proxyURL = r.cfg.ProxyURL
	if r.proxyURL == "" {
		r.proxyURL = scheme + "://" + advertiseAddr(ln.Addr().(*net.TCPAddr))
	}
	hs, ln := r.proxyServer(ln)
	go func() {
		var err error
		if r.cfg.ProxyTLSCert != "" {
			err = hs.ServeTLS(ln, r.cfg.ProxyTLSCert, r.cfg.ProxyTLSKey)
		} else {
			err = hs.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("port proxy", "err", err)
		}
	}()
	r.log.Info("port proxy listening", "addr", ln.Addr().String(), "url", r.proxyURL)
	return hs, nil
}

// advertiseAddr is the gateway address users are told to dial when none is
// configured: the listener's, or this host's name when it listens on every
// address.
func advertiseAddr(a *net.TCPAddr) string {
	if a.IP.IsUnspecified() {
		if h, err := os.Hostname(); err == nil && h != "" {
			return net.JoinHostPort(h, strconv.Itoa(a.Port))
		}
	}
	return a.String()
}

// checkTraversable makes sure environments' unprivileged host uids can
// reach their directories under dir: every parent must be searchable by
// others (o+x); the contents stay private by their own modes.
func checkTraversable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("data dir %s: parent %s (mode %o) must be searchable by others (chmod o+x) so environments' unprivileged uids can reach their files", abs, p, st.Mode().Perm())
		}
		if p == "/" {
			return nil
		}
	}
}
