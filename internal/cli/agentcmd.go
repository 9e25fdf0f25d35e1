package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/covedev/cove/internal/agent"
	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/guest"
	"github.com/spf13/cobra"
)

// AgentCommand is `cove agent`, PID 1 inside every environment.
func AgentCommand() *cobra.Command {
	cfg := agent.Config{}
	var logFile string
	cmd := &cobra.Command{
		Use:    "agent",
		Short:  "Run the in-environment agent (started by the runner)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Env = os.Environ()
			logOut := io.Writer(os.Stderr)
			if logFile != "" {
				f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
				if err != nil {
					return fmt.Errorf("open agent log: %w", err)
				}
				defer f.Close()
				logOut = f
			}
			cfg.Log = slog.New(slog.NewTextHandler(logOut, nil)).With("component", "agent")
			ctx, cancel := signalContext(cmd.Context())
			defer cancel()
			err := agent.Run(ctx, cfg)
			var ee *agent.ExitError
			if errors.As(err, &ee) {
				// Exit with the service's own code, without a message.
				return &exitError{code: ee.Code}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.SocketPath, "socket", guest.AgentSocket, "unix socket to serve SSH on (without --listen-fd)")
	f.IntVar(&cfg.ListenFD, "listen-fd", 0, "serve SSH on this inherited listening unix socket (the runner's) instead of --socket")
	f.StringVar(&cfg.HostKeyPath, "host-key", "", "SSH host key file (default: a new key in memory)")
	f.StringVar(&cfg.AuthorizedKeysPath, "authorized-keys", guest.RunnerKeys, "keys allowed to connect")
	f.StringVar(&cfg.User, "user", "", "user sessions run as")
	f.StringVar(&cfg.WorkDir, "workdir", "", "directory sessions start in")
	f.StringVar(&cfg.UserEnvProbe, "user-env-probe", "", "shell environment applied to users' sessions: none, loginShell, interactiveShell, loginInteractiveShell")
	f.StringArrayVar(&cfg.Entrypoints, "entrypoint", nil, "a feature's entrypoint script, run as a chain before the command (repeatable, in install order)")
	f.StringArrayVar(&cfg.Command, "command", nil, "one argument of the image's ENTRYPOINT and CMD, run at the end of the entrypoint chain (repeatable; default: sleep forever)")
	f.StringVar(&cfg.EntrypointDir, "entrypoint-workdir", "/", "working directory of the entrypoint chain (the image's WorkingDir)")
	f.StringVar(&cfg.PostAttachPath, "post-attach", "", "JSON file with the postAttachCommand list, run by sessions that send "+agentproto.EnvPostAttach+"=1")
	f.StringVar(&cfg.RemoteEnvPath, "remote-env", "", "JSON file with remoteEnv (a list of KEY=VALUE) for users' sessions, applied after the user env probe")
	f.BoolVar(&cfg.KeepProfilePath, "keep-profile-path", false, "patch /etc/profile and /etc/environment once so that login shells keep the container's PATH and environment (the dev container)")
	f.StringVar(&cfg.CommandUser, "command-user", "", "user the entrypoint chain runs as: name, uid, name:group or uid:gid (default root)")
	f.BoolVar(&cfg.ExitWithCommand, "exit-with-command", false, "service mode: exit with the command's exit code when it ends (127 if it cannot start)")
	f.StringVar(&cfg.ExitCodeFile, "exit-code-file", "", "with --exit-with-command, write the command's exit code to this file before exiting")
	f.StringVar(&logFile, "log-file", "", "append the agent's own log to this file instead of stderr")
	cmd.AddCommand(&cobra.Command{
		Use:    "sftp-server",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return agent.ServeSFTP(os.Stdin, os.Stdout)
		},
	})
	return cmd
}
