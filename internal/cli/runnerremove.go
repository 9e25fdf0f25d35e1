package cli

import (
	"fmt"

	"connectrpc.com/connect"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
)

// runnerRemove is `cove runner remove`: an owner takes a runner out, for
// good (a lost or compromised host).
func runnerRemove() *cobra.Command {
	return &cobra.Command{
		Use:   "remove ID|NAME",
		Short: "Remove a runner (owners only): its token stops working at once",
		Long: "Remove a runner: its token stops working at once, and its environments become stopped and " +
			"unassigned. Their files stay on that host; started again, they run on another runner from their source. " +
			"To bring the host back, join it again with a new join token.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Runners.DeleteRunner(cmd.Context(), connect.NewRequest(&covev1.DeleteRunnerRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "Runner %s removed; %d environments released (stopped, unassigned).\n", args[0], len(resp.Msg.ReleasedEnvironmentIds))
			for _, id := range resp.Msg.ReleasedEnvironmentIds {
				fmt.Fprintln(cmd.OutOrStdout(), id)
			}
			return nil
		},
	}
}
