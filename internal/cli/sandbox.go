package cli

import (
	"os"

	"github.com/covedev/cove/internal/content"
	"github.com/spf13/cobra"
)

// SandboxCommand is the hidden `cove internal-sandbox [--resolv FILE]
// [--rw DIR]... -- COMMAND [ARG...]`, PID 1 of the clone sandbox the runner
// starts in new user, mount and pid namespaces (see content.SandboxMain).
func SandboxCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "internal-sandbox [--resolv FILE] [--rw DIR]... -- COMMAND [ARG...]",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			os.Exit(content.SandboxMain(args))
			return nil
		},
	}
}
