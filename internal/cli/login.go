package cli

import (
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
)

// LoginCommand is `cove login`.
func LoginCommand() *cobra.Command {
	var server, token string
	cmd := &cobra.Command{
		Use:   "login --server URL --token TOKEN",
		Short: "Log the CLI in to a cove server with a personal access token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			server = strings.TrimRight(server, "/")
			c := apiclient.New(http.DefaultClient, server, token)
			who, err := c.Users.WhoAmI(cmd.Context(), connect.NewRequest(&covev1.WhoAmIRequest{}))
			if err != nil {
				return fmt.Errorf("log in to %s: %w", server, err)
			}
			if err := saveConfig(Config{Server: server, Token: token}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Logged in to %s as %s.\n", server, termsafe.Line(who.Msg.User.Name))
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "server URL, e.g. http://127.0.0.1:7780")
	cmd.Flags().StringVar(&token, "token", "", "personal access token")
	_ = cmd.MarkFlagRequired("server")
	_ = cmd.MarkFlagRequired("token")
	return cmd
}

// WhoAmICommand is `cove whoami`.
func WhoAmICommand() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the logged-in user",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, cfg, err := clients()
			if err != nil {
				return err
			}
			who, err := c.Users.WhoAmI(cmd.Context(), connect.NewRequest(&covev1.WhoAmIRequest{}))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%s) on %s\n", termsafe.Line(who.Msg.User.Name), termsafe.Line(who.Msg.User.Role), cfg.Server)
			return nil
		},
	}
}
