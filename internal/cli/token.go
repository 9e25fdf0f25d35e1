package cli

import (
	"fmt"
	"time"

	"connectrpc.com/connect"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
)

// TokenCommand is `cove token`.
func TokenCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Personal access tokens"}
	var name string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Make a personal access token (for another machine, scripts or the browser login)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, cfg, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Users.CreateToken(cmd.Context(), connect.NewRequest(&covev1.CreateTokenRequest{Name: name, TtlSeconds: int64(ttl.Seconds())}))
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), resp.Msg.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "Elsewhere: cove login --server %s --token %s\n", cfg.Server, resp.Msg.Token)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "cli", "a name to tell the token by")
	create.Flags().DurationVar(&ttl, "ttl", 0, "how long it is valid (0: no expiry)")
	cmd.AddCommand(create)
	return cmd
}
