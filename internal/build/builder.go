// Package build builds container images from Dockerfiles with BuildKit.
//
// A Builder owns one buildkitd process: its own root directory, socket and
// configuration under a directory the runner gives it, the runc binary set
// explicitly, the containerd worker off, and the gateway frontend disabled so
// that a `# syntax=` line never pulls a frontend image. Builds talk to it with
// BuildKit's Go client and use the Dockerfile frontend built into buildkitd
// ("dockerfile.v0"); the result is exported as an OCI image layout directory
// that go-containerregistry's layout package reads.
//
// The buildkitd binary is built by scripts/build-buildkit.sh at a pinned
// version (see BuildkitVersion).
package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/netenv"

	bkclient "github.com/moby/buildkit/client"
)

// BuildkitVersion is the BuildKit release whose buildkitd this package drives
// and whose Go client it links.
const BuildkitVersion = "v0.33.1"

// DefaultBuildkitd is where scripts/build-buildkit.sh installs buildkitd.
const DefaultBuildkitd = "/var/cache/cove-buildkit/" + BuildkitVersion + "/bin/buildkitd"

// Config configures a Builder.
type Config struct {
	// Dir holds buildkitd's state: root/ (snapshots, cache), buildkitd.sock,
	// buildkitd.toml, buildkitd.pid and buildkitd.log. Required.
	Dir string
	// Buildkitd is the buildkitd binary; DefaultBuildkitd when empty.
	Buildkitd string
	// Runc is the OCI runtime binary RUN steps execute with; "runc" looked up
	// in PATH when empty.
	Runc string
	// InsecureRegistries are registry hosts ("127.0.0.1:5000") that are
	// reached over plain HTTP without TLS verification (tests, local mirrors).
	InsecureRegistries []string
	// AllowCacheFrom lets requests import build cache from registries
	// (Request.CacheFrom) into the cache every build shares; only for
	// runners whose users all trust every registry they may name.
	AllowCacheFrom bool
	// NetworkMode is the network of RUN steps: "host", "cni", "bridge" or
	// "auto" (buildkitd's default when empty). NOTE: "host" and "auto"
	// without CNI give RUN steps the host's network.
	NetworkMode string
	// NetNSPath, if set, is a network namespace (a bind-mounted nsfs file)
	// buildkitd runs in; RUN steps then share it (NetworkMode "host" inside
	// it), so they get that namespace's egress policy and no access to the
	// host's services. The runner uses an environment-like namespace.
	NetNSPath string
	// IDMap, if set, runs buildkitd rootless: as root of a new user
	// namespace mapped to this host id range, so RUN steps are never host
	// root (a container escape in a build lands on an unprivileged uid).
	IDMap idmap.Range
	// Wrapper, if set, is a command line buildkitd runs behind (its argv is
	// appended), e.g. to give it its own /etc/resolv.conf.
	Wrapper []string
	// Place, if set, puts buildkitd in a cgroup of its own (the runner's
	// limited work cgroup) as soon as it has started, before the Builder
	// first talks to it: the RUN steps it starts for builds are born
	// there. An error stops buildkitd and fails the start.
	Place func(pid int) error
	// StartTimeout bounds how long Start waits for buildkitd to answer;
	// 30s when zero.
	StartTimeout time.Duration
	// Logger receives lifecycle events; slog.Default() when nil.
	Logger *slog.Logger
}

// Builder supervises one buildkitd process and builds images with it. It is
// safe for concurrent use; buildkitd runs builds in parallel and shares its
// cache between them.
type Builder struct {
	cfg  Config
	log  *slog.Logger
	runc string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
	client  *bkclient.Client
	stopped bool
}

// New checks cfg and returns a Builder that is not started yet.
func New(cfg Config) (*Builder, error) {
	if cfg.Dir == "" {
		return nil, errors.New("build: Config.Dir is required")
	}
	if cfg.Buildkitd == "" {
		cfg.Buildkitd = DefaultBuildkitd
	}
	if _, err := os.Stat(cfg.Buildkitd); err != nil {
		return nil, fmt.Errorf("buildkitd binary (run scripts/build-buildkit.sh): %w", err)
	}
	if cfg.Runc == "" {
		cfg.Runc = "runc"
	}
	runc, err := exec.LookPath(cfg.Runc)
	if err != nil {
		return nil, fmt.Errorf("runc binary: %w", err)
	}
	if runc, err = filepath.Abs(runc); err != nil {
		return nil, err
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	return &Builder{cfg: cfg, log: cfg.Logger.With("component", "buildkitd"), runc: runc}, nil
}

func (b *Builder) socket() string  { return filepath.Join(b.cfg.Dir, "buildkitd.sock") }
func (b *Builder) pidFile() string { return filepath.Join(b.cfg.Dir, "buildkitd.pid") }

// Address is the buildkitd gRPC address, for `buildctl --addr` when debugging.
func (b *Builder) Address() string { return "unix://" + b.socket() }

// Start starts buildkitd and waits until it answers. A buildkitd left over
// from a previous runner process (recorded in buildkitd.pid) is stopped first.
// Start on a running Builder does nothing.
func (b *Builder) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = false
	_, err := b.ensureLocked(ctx)
	return err
}

// client returns a client to a running buildkitd, restarting it when it has
// exited since the last call.
func (b *Builder) getClient(ctx context.Context) (*bkclient.Client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return nil, errors.New("builder is stopped")
	}
	return b.ensureLocked(ctx)
}

func (b *Builder) ensureLocked(ctx context.Context) (*bkclient.Client, error) {
	if b.cmd != nil {
		select {
		case <-b.exited:
			b.log.WarnContext(ctx, "buildkitd exited; restarting", "state", b.cmd.ProcessState.String())
			b.closeClientLocked()
			b.cmd = nil
		default:
			return b.client, nil
		}
	}
	if err := b.startLocked(ctx); err != nil {
		return nil, err
	}
	return b.client, nil
}

func (b *Builder) startLocked(ctx context.Context) error {
	if err := os.MkdirAll(b.rootDir(), 0o700); err != nil {
		return fmt.Errorf("buildkitd dir: %w", err)
	}
	if r := b.cfg.IDMap; r.Size > 0 {
		// buildkitd's root inside its user namespace owns its directory.
		for _, d := range []string{b.cfg.Dir, b.rootDir()} {
			if err := os.Chown(d, int(r.HostID), int(r.HostID)); err != nil {
				return fmt.Errorf("buildkitd dir: %w", err)
			}
		}
	}
	if err := b.killStale(ctx); err != nil {
		return err
	}
	if err := os.Remove(b.socket()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	confPath := filepath.Join(b.cfg.Dir, "buildkitd.toml")
	if err := os.WriteFile(confPath, []byte(b.configTOML()), 0o600); err != nil {
		return fmt.Errorf("write buildkitd config: %w", err)
	}
	if r := b.cfg.IDMap; r.Size > 0 {
		if err := os.Chown(confPath, int(r.HostID), int(r.HostID)); err != nil {
			return fmt.Errorf("buildkitd config: %w", err)
		}
	}
	logf, err := os.OpenFile(filepath.Join(b.cfg.Dir, "buildkitd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("buildkitd log: %w", err)
	}
	defer logf.Close() // the child keeps its own descriptor

	argv := append(slices.Clone(b.cfg.Wrapper), b.cfg.Buildkitd,
		"--config", confPath,
		"--root", b.rootDir(),
		"--addr", b.Address(),
	)
	if b.cfg.IDMap.Size > 0 {
		argv = append(argv, "--rootless")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Its own process group: a terminal's ^C to the runner does not kill
	// builds half-way; Stop ends it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if r := b.cfg.IDMap; r.Size > 0 {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(r.HostID), Size: int(r.Size)}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(r.HostID), Size: int(r.Size)}}
		cmd.SysProcAttr.GidMappingsEnableSetgroups = true
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	// An explicit environment, not the runner's (see buildkitdEnv).
	cmd.Env = buildkitdEnv(filepath.Dir(b.runc), "")
	if r := b.cfg.IDMap; r.Size > 0 {
		// Rootless buildkitd keeps its sockets and state under XDG dirs.
		xdg := filepath.Join(b.cfg.Dir, "xdg")
		for _, d := range []string{xdg, filepath.Join(xdg, "run"), filepath.Join(xdg, "config"), filepath.Join(xdg, "data")} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return err
			}
			if err := os.Chown(d, int(r.HostID), int(r.HostID)); err != nil {
				return err
			}
		}
		cmd.Env = buildkitdEnv(filepath.Dir(b.runc), xdg)
	}
	if err := netenv.StartIn(b.cfg.NetNSPath, cmd); err != nil {
		return fmt.Errorf("start buildkitd: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // reaps it: PID 1 here may not
		close(exited)
	}()
	if err := os.WriteFile(b.pidFile(), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		b.log.WarnContext(ctx, "write pid file", "err", err)
	}
	if b.cfg.Place != nil {
		if err := b.cfg.Place(cmd.Process.Pid); err != nil {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-exited
			b.removePidFile(cmd.Process.Pid)
			return fmt.Errorf("buildkitd's cgroup: %w", err)
		}
	}
	b.cmd, b.exited = cmd, exited

	c, err := b.waitReady(ctx, exited)
	if err != nil {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		b.cmd = nil
		b.removePidFile(cmd.Process.Pid)
		return fmt.Errorf("buildkitd did not start (log %s): %w", logf.Name(), err)
	}
	b.client = c
	b.log.InfoContext(ctx, "buildkitd started", "pid", cmd.Process.Pid, "addr", b.Address())
	return nil
}

// waitReady polls buildkitd until it lists a worker.
func (b *Builder) waitReady(ctx context.Context, exited <-chan struct{}) (*bkclient.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.StartTimeout)
	defer cancel()
	var last error
	for {
		if _, err := os.Stat(b.socket()); err == nil {
			c, err := bkclient.New(ctx, b.Address())
			if err == nil {
				if last = health(ctx, c); last == nil {
					return c, nil
				}
				c.Close()
			} else {
				last = err
			}
		}
		select {
		case <-exited:
			return nil, errors.New("buildkitd exited")
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return nil, last
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func health(ctx context.Context, c *bkclient.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ws, err := c.ListWorkers(ctx)
	if err != nil {
		return fmt.Errorf("list workers: %w", err)
	}
	if len(ws) == 0 {
		return errors.New("buildkitd has no workers")
	}
	return nil
}

// Healthy reports whether buildkitd is running and answers.
func (b *Builder) Healthy(ctx context.Context) error {
	b.mu.Lock()
	c, exited := b.client, b.exited
	b.mu.Unlock()
	if c == nil {
		return errors.New("buildkitd is not running")
	}
	select {
	case <-exited:
		return errors.New("buildkitd exited")
	default:
	}
	return health(ctx, c)
}

// Stop stops buildkitd: SIGTERM, then SIGKILL when it has not exited when
// ctx ends or after 10 seconds. Builds running on it fail.
func (b *Builder) Stop(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	b.closeClientLocked()
	if b.cmd == nil {
		return nil
	}
	cmd, exited := b.cmd, b.exited
	b.cmd = nil
	defer b.removePidFile(cmd.Process.Pid)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
	}
	b.log.WarnContext(ctx, "buildkitd did not stop; killing", "pid", cmd.Process.Pid)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	return nil
}

func (b *Builder) closeClientLocked() {
	if b.client != nil {
		_ = b.client.Close()
		b.client = nil
	}
}

// killStale stops a buildkitd recorded in the pid file by an earlier process.
func (b *Builder) killStale(ctx context.Context) error {
	data, err := os.ReadFile(b.pidFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return os.Remove(b.pidFile())
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != filepath.Base(b.cfg.Buildkitd) {
		return os.Remove(b.pidFile()) // gone, or the pid was reused
	}
	b.log.InfoContext(ctx, "stopping stale buildkitd", "pid", pid)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return os.Remove(b.pidFile())
		}
		// A zombie of ours is not possible (it belonged to an earlier
		// process); a zombie reparented to a non-reaping PID 1 stays
		// forever, so also stop when it is one.
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && isZombie(string(st)) {
			return os.Remove(b.pidFile())
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	time.Sleep(200 * time.Millisecond)
	return os.Remove(b.pidFile())
}

// removePidFile removes the pid file when it still records pid (a newer
// Builder on the same directory may have replaced it).
func (b *Builder) removePidFile(pid int) {
	if data, err := os.ReadFile(b.pidFile()); err == nil && strings.TrimSpace(string(data)) == strconv.Itoa(pid) {
		_ = os.Remove(b.pidFile())
	}
}

func isZombie(stat string) bool {
	i := strings.LastIndexByte(stat, ')')
	return i >= 0 && len(stat) > i+2 && stat[i+2] == 'Z'
}

// configTOML is buildkitd's configuration.
func (b *Builder) configTOML() string {
	var s strings.Builder
	fmt.Fprintf(&s, "[worker.oci]\n  enabled = true\n  binary = %q\n  snapshotter = \"overlayfs\"\n  gc = true\n", b.runc)
	if b.cfg.NetworkMode != "" {
		fmt.Fprintf(&s, "  networkMode = %q\n", b.cfg.NetworkMode)
	}
	s.WriteString("[worker.containerd]\n  enabled = false\n")
	if b.cfg.IDMap.Size > 0 {
		fmt.Fprintf(&s, "[otel]\n  socketPath = %q\n", filepath.Join(b.cfg.Dir, "xdg", "run", "otel-grpc.sock"))
	}
	// No `# syntax=` frontend images, no BUILDKIT_SYNTAX: only the built-in
	// Dockerfile frontend runs.
	s.WriteString("[frontend.\"gateway.v0\"]\n  enabled = false\n")
	for _, r := range b.cfg.InsecureRegistries {
		fmt.Fprintf(&s, "[registry.%q]\n  http = true\n  insecure = true\n", r)
	}
	return s.String()
}

// rootDir is buildkitd's state: separate for rootless, whose files belong to
// the user namespace's range.
func (b *Builder) rootDir() string {
	if b.cfg.IDMap.Size > 0 {
		return filepath.Join(b.cfg.Dir, "root-userns")
	}
	return filepath.Join(b.cfg.Dir, "root")
}

// writerOrDiscard returns w, or io.Discard when w is nil.
func writerOrDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
