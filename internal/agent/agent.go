// Package agent is the in-environment agent: it runs as PID 1 inside every
// environment, reaps orphaned processes, and serves SSH (shells, commands,
// sftp, port forwarding, and a stream of the environment's listening TCP
// ports, see agentproto.PortsChannel) on a unix socket that only the runner can reach.
//
// # Entrypoint chain
//
// At start the agent runs one background process, as Config.CommandUser
// (root by default), in Config.EntrypointDir: the features' entrypoints in install order
// (Config.Entrypoints), followed by the image's ENTRYPOINT and CMD
// (Config.Command, given when devcontainer.json's overrideCommand is false)
// or else by the reference CLI's keep-alive loop
// (/bin/sh -c 'trap "exit 0" TERM; while sleep 1000 & wait $!; do :; done'). A feature
// entrypoint does its setup and then runs `exec "$@"`, so the chain is a
// single process, a child of the agent, tracked in its process table like a
// session. Its output goes to the agent's stdout and stderr (the
// container's console). When it exits, the agent logs it and keeps running
// (it, not the chain, keeps the environment alive; see Service mode for
// the exception); on shutdown it gets SIGTERM (its process group) like the
// sessions. With neither entrypoints nor a command nothing is started.
//
// # Service mode
//
// The runner starts each Docker Compose service other than the
// devcontainer's own as a sibling container whose PID 1 is also the agent,
// with the service's entrypoint and command as Config.Command, its user as
// Config.CommandUser, and Config.ExitWithCommand set: the container lives
// as long as its command, as with Docker. When the chain exits the agent
// shuts down as on SIGTERM (stops serving, signals what is left, waits the
// grace period), writes the chain's exit code to Config.ExitCodeFile (for
// depends_on's service_completed_successfully) and Run returns an
// *ExitError carrying it (nil for 0): the exit status, 128+signal, or 127
// when the chain could not start (an unknown user, a missing program, or
// nothing to run at all). `cove agent --log-file` keeps the agent's own log
// off the console, which then holds only the service's output; the runner
// stores it as services/NAME.log beside the lifecycle log, where the
// logs subsystem serves it (agentproto.EnvLogsService).
//
// # postAttachCommand
//
// Config.PostAttachPath names a JSON file with the postAttachCommand list,
// in the JSON form of lifecycle.Command ([{"Shell": ..., "Args": ...,
// "Parallel": ..., "Origin": ...}, ...]). A shell, exec or pty session that
// sends the env request agentproto.EnvPostAttach=1 first runs that list, as the
// session's user, in its working directory and environment (after the
// user env probe), in order, object forms in parallel, stopping at the
// first failure; headers, output and failures ("postAttachCommand failed
// with exit code N: ...") go to the session's stderr, or its terminal for a
// pty session. The session's own command runs afterwards whatever their
// result, as the specification requires. The file is read per session; a
// missing file means no commands. If the client closes the channel
// meanwhile, the running command gets SIGTERM and the session's command is
// not started.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gliderlabs/ssh"
)

// Config configures the agent.
type Config struct {
	// ListenFD, if not 0, is an inherited listening unix socket to serve
	// on: the runner creates the socket where the environment cannot reach
	// it and hands it over. Otherwise the agent listens on SocketPath.
	ListenFD           int
	SocketPath         string
	AuthorizedKeysPath string   // authorized_keys format; only these keys may connect
	HostKeyPath        string   // optional; an ed25519 host key is generated in memory if empty
	User               string   // default session user: name or uid[:gid] as in an OCI image config ("" = root)
	WorkDir            string   // sessions start here (the user's home if missing)
	Env                []string // base environment (from the image config), e.g. PATH=...
	LogPath            string   // lifecycle log served by the agentproto.LogsSubsystem; default DefaultLogPath
	Log                *slog.Logger
	// UserEnvProbe is devcontainer.json's userEnvProbe: applied to users'
	// sessions that do not ask for another ("" or "none": no probe).
	UserEnvProbe string

	// Entrypoints are the features' entrypoint scripts, in install order;
	// Command is the image's ENTRYPOINT and CMD (when overrideCommand is
	// false). The agent runs them as one chain at start, see the package
	// documentation. EntrypointDir is the chain's working directory (the
	// image's WorkingDir; "/" when empty or missing).
	Entrypoints   []string
	Command       []string
	EntrypointDir string

	// CommandUser is the user the entrypoint chain runs as, in the OCI
	// image config form (name, uid, name:group, uid:gid) resolved against
	// the environment's passwd and group files; "" means root.
	CommandUser string

	// ExitWithCommand is service mode (a Docker Compose service's
	// container): when the chain exits, or cannot be started, the agent
	// shuts down and Run returns nil for exit code 0, else an *ExitError
	// with the chain's code. ExitCodeFile, if set, then receives that code
	// as decimal text and a newline (written atomically).
	ExitWithCommand bool
	ExitCodeFile    string

	// PostAttachPath is a JSON file holding the postAttachCommand list in
	// the lifecycle.Command JSON form; sessions that send agentproto.EnvPostAttach=1
	// run it first. A missing file means no commands.
	PostAttachPath string

	// RemoteEnvPath is a JSON file holding devcontainer.json's remoteEnv
	// as a list of KEY=VALUE: users' sessions (the gateway's login name,
	// agentproto.DefaultUser) get it after the user env probe and before
	// what the client sends. A missing file means none. remoteEnv is
	// never in the agent's own environment, so the entrypoint chain and
	// what it starts do not see it.
	RemoteEnvPath string

	// KeepProfilePath patches /etc/profile once at start (see
	// keepProfilePath) so that login shells keep the PATH they are given
	// instead of resetting it, as the reference CLI does in the dev
	// container.
	KeepProfilePath bool

	// Internal knobs for tests.
	passwdPath    string        // default /etc/passwd
	groupPath     string        // default /etc/group
	reap          bool          // act as init (reaper, SIGTERM handling) even when not PID 1
	sftpServer    []string      // command for the sftp subsystem; default: this executable "agent sftp-server"
	shutdownGrace time.Duration // how long session processes get after SIGTERM
	portsInterval time.Duration // how often port discovery looks while the environment is active; default 250ms
	portsIdle     time.Duration // how often at most when nothing happens; default 5s
	portsHot      time.Duration // how long activity keeps it looking often; default 10s
	nsLastPid     string        // the pid namespace's last pid; default /proc/sys/kernel/ns_last_pid
	procNetFiles  []string      // tables to read instead of sock_diag (tests); nil: sock_diag
	probeTimeout  time.Duration // bound on the user env probe; default 10s
	logsPoll      time.Duration // how often a followed log is polled; default 250ms
	entrypointOut *os.File      // the entrypoint chain's stdout and stderr; default os.Stderr
	profilePath   string        // default /etc/profile
	profileMarker string        // default /var/devcontainer/.patchEtcProfileMarker
	envFilePath   string        // default /etc/environment
	envFileMarker string        // default /var/devcontainer/.patchEtcEnvironmentMarker

	portsWait func(time.Duration) // called with each wait port discovery chooses
}

const defaultShutdownGrace = 5 * time.Second

// Run serves SSH on cfg.SocketPath until ctx is done. When the agent is
// PID 1 it also acts as init: it reaps every zombie, and on SIGTERM or
// SIGINT it stops accepting connections, sends SIGTERM to all session
// processes, waits briefly and returns nil. In service mode
// (cfg.ExitWithCommand) it also shuts down when the entrypoint chain ends,
// and returns the chain's exit code as an *ExitError (nil for 0).
func Run(ctx context.Context, cfg Config) error {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.passwdPath == "" {
		cfg.passwdPath = defaultPasswdPath
	}
	if cfg.groupPath == "" {
		cfg.groupPath = defaultGroupPath
	}
	if cfg.shutdownGrace == 0 {
		cfg.shutdownGrace = defaultShutdownGrace
	}
	if len(cfg.sftpServer) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable: %w", err)
		}
		cfg.sftpServer = []string{exe, "agent", "sftp-server"}
	}
	initMode := cfg.reap || os.Getpid() == 1
	log := cfg.Log

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	act := &activity{}
	procs := newProcTable(initMode, log)
	procs.act = act
	if initMode {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		defer signal.Stop(sigs)
		go func() {
			select {
			case sig := <-sigs:
				log.Info("shutting down", "signal", sig.String())
				cancel()
			case <-ctx.Done():
			}
		}()
		reaperCtx, stopReaper := context.WithCancel(context.Background())
		defer stopReaper() // runs after the shutdown below has waited for sessions
		go procs.runReaper(reaperCtx)
	}

	signer, err := loadHostKey(cfg.HostKeyPath)
	if err != nil {
		return err
	}
	if _, err := readAuthorizedKeys(cfg.AuthorizedKeysPath); err != nil {
		return err
	}

	a := &agent{cfg: cfg, log: log, procs: procs, act: act}
	if cfg.KeepProfilePath {
		a.keepProfilePath() // before the first session's probe
	}
	srv := a.server()
	srv.AddHostKey(signer)

	ln, err := a.listen()
	if err != nil {
		return err
	}
	log.Info("agent listening", "socket", cfg.SocketPath, "fd", cfg.ListenFD, "init", initMode)
	chain, err := a.startEntrypoint(ctx)
	if err == nil && chain == nil && cfg.ExitWithCommand {
		err = errors.New("no command to run")
	}
	switch {
	case err != nil && cfg.ExitWithCommand:
		log.Error("entrypoint", "err", err)
		cancel() // a service whose command cannot start exits at once
	case err != nil:
		// Like a container whose entrypoint fails, but the agent stays up
		// so the user can get in and look.
		log.Error("entrypoint", "err", err)
	case cfg.ExitWithCommand:
		go func() {
			select {
			case <-chain.done:
				log.Info("command exited, shutting down")
				cancel()
			case <-ctx.Done():
			}
		}()
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, ssh.ErrServerClosed) {
			a.shutdown(srv, ln)
			return fmt.Errorf("serve ssh: %w", err)
		}
	}
	a.shutdown(srv, ln)
	if cfg.ExitWithCommand {
		return a.finishService(chain)
	}
	return nil
}

// shutdown stops accepting connections, asks session processes to exit,
// kills what is left after the grace period, and closes all connections.
func (a *agent) shutdown(srv *ssh.Server, ln net.Listener) {
	ln.Close()
	if n := a.procs.signalAll(syscall.SIGTERM); n > 0 {
		a.log.Info("waiting for session processes", "count", n)
		deadline := time.Now().Add(a.cfg.shutdownGrace)
		for a.procs.running() > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if n := a.procs.signalAll(syscall.SIGKILL); n > 0 {
			a.log.Warn("killed session processes", "count", n)
			deadline := time.Now().Add(time.Second)
			for a.procs.running() > 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	// Let sessions whose process ended report its exit status.
	deadline := time.Now().Add(time.Second)
	for a.sessions.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	srv.Close()
	a.conns.closeAll()
	if a.cfg.ListenFD == 0 {
		os.Remove(a.cfg.SocketPath)
	}
}

// listen returns the listener to serve on: the inherited one, or a new
// socket at SocketPath.
func (a *agent) listen() (net.Listener, error) {
	if a.cfg.ListenFD == 0 {
		return listenUnix(a.cfg.SocketPath)
	}
	f := os.NewFile(uintptr(a.cfg.ListenFD), "agent-socket")
	if f == nil {
		return nil, fmt.Errorf("listen fd %d: not open", a.cfg.ListenFD)
	}
	// FileListener dups the descriptor close-on-exec; closing the original
	// keeps session processes from inheriting the socket.
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("listen fd %d: %w", a.cfg.ListenFD, err)
	}
	if _, ok := ln.(*net.UnixListener); !ok {
		ln.Close()
		return nil, fmt.Errorf("listen fd %d: not a unix socket", a.cfg.ListenFD)
	}
	return ln, nil
}

// listenUnix listens on path, replacing a stale socket file, with mode 0600.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("listen %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return ln, nil
}
