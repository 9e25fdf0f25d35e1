package cli

import (
	"log/slog"
	"os"

	"github.com/covedev/cove/internal/agent"
	"github.com/spf13/cobra"
)

// AgentCommand is `cove agent`, PID 1 inside every environment.
func AgentCommand() *cobra.Command {
	cfg := agent.Config{}
	cmd := &cobra.Command{
		Use:    "agent",
		Short:  "Run the in-environment agent (started by the runner)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Env = os.Environ()
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "agent")
			ctx, cancel := signalContext(cmd.Context())
			defer cancel()
			return agent.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.SocketPath, "socket", "/.cove/run/agent.sock", "unix socket to serve SSH on")
	f.StringVar(&cfg.AuthorizedKeysPath, "authorized-keys", "/.cove/etc/runner_keys", "keys allowed to connect")
	f.StringVar(&cfg.User, "user", "", "user sessions run as")
	f.StringVar(&cfg.WorkDir, "workdir", "", "directory sessions start in")
	f.StringVar(&cfg.UserEnvProbe, "user-env-probe", "", "shell environment applied to users' sessions: none, loginShell, interactiveShell, loginInteractiveShell")
	f.StringArrayVar(&cfg.Entrypoints, "entrypoint", nil, "a feature's entrypoint script, run as a chain before the command (repeatable, in install order)")
	f.StringArrayVar(&cfg.Command, "command", nil, "one argument of the image's ENTRYPOINT and CMD, run at the end of the entrypoint chain (repeatable; default: sleep forever)")
	f.StringVar(&cfg.EntrypointDir, "entrypoint-workdir", "/", "working directory of the entrypoint chain (the image's WorkingDir)")
	f.StringVar(&cfg.PostAttachPath, "post-attach", "", "JSON file with the postAttachCommand list, run by sessions that send "+agent.EnvPostAttach+"=1")
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
