// Command cove is one static binary: the CLI, the server, the runner and
// the in-environment agent.
package main

import (
	"fmt"
	"os"

	"github.com/covedev/cove/internal/cli"
	"github.com/covedev/cove/internal/termsafe"
	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "cove",
		Short:         "Self-hosted cloud development environments",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		cli.UpCommand(),
		cli.LoginCommand(),
		cli.WhoAmICommand(),
		cli.TokenCommand(),
		cli.EnvCommand(),
		cli.SSHCommand(),
		cli.ConfigSSHCommand(),
		cli.PortsCommand(),
		cli.PortForwardCommand(),
		cli.DevcontainerCommand(),
		cli.ServerCommand(),
		cli.RunnerCommand(),
		cli.AgentCommand(),
		cli.WithResolvCommand(),
		cli.SandboxCommand(),
		cli.UnpackLayerCommand(),
		cli.BackupChildCommand(),
	)
	// A mistyped subcommand is an error with suggestions, not a group's help
	// and exit 0 that scripts take for success.
	cli.RejectUnknownSubcommands(root)
	if err := root.Execute(); err != nil {
		code, remote := cli.ExitCode(err)
		if !remote {
			// Errors carry server and remote text: no control sequences.
			fmt.Fprintln(os.Stderr, "cove:", termsafe.String(err.Error()))
		}
		os.Exit(code)
	}
}
