package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TokenCommand is `cove token`.
func TokenCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Personal access tokens: create, list, revoke"}
	cmd.AddCommand(tokenCreate(), tokenList(), tokenRevoke())
	return cmd
}

func tokenCreate() *cobra.Command {
	var name string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Make a personal access token (for another machine, scripts or the browser login)",
		Long: "Make a personal access token. It never outlives the token you are logged in with: " +
			"without --ttl it expires when yours does (or never, if yours never does).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl < 0 || (ttl > 0 && ttl < time.Second) {
				return fmt.Errorf("--ttl must be at least 1s, or 0 for the longest allowed")
			}
			c, cfg, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Users.CreateToken(cmd.Context(), connect.NewRequest(&covev1.CreateTokenRequest{Name: name, TtlSeconds: int64(ttl / time.Second)}))
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), resp.Msg.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "Token %s, %s.\n", resp.Msg.GetInfo().GetId(), expiry(resp.Msg.GetInfo().GetExpiresAt()))
			fmt.Fprintf(cmd.ErrOrStderr(), "Elsewhere: cove login --server %s --token %s\n", cfg.Server, resp.Msg.Token)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "cli", "a name to tell the token by")
	create.Flags().DurationVar(&ttl, "ttl", 0, "how long it is valid (0: as long as the token you are logged in with)")
	return create
}

func tokenList() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List your tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Users.ListTokens(cmd.Context(), connect.NewRequest(&covev1.ListTokensRequest{}))
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tCREATED\tEXPIRES\tCREATED WITH")
			for _, t := range resp.Msg.Tokens {
				id := t.Id
				if t.Current {
					id += " (this one)"
				}
				parent := t.ParentId
				if parent == "" {
					parent = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s ago\t%s\t%s\n", id, termsafe.Line(t.Name), age(t.CreatedAt.AsTime()),
					strings.TrimPrefix(expiry(t.ExpiresAt), "expires "), parent)
			}
			return tw.Flush()
		},
	}
}

func tokenRevoke() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke one of your tokens, and the tokens made with it; they stop working at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Users.RevokeToken(cmd.Context(), connect.NewRequest(&covev1.RevokeTokenRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			for _, id := range resp.Msg.RevokedIds {
				fmt.Fprintln(cmd.OutOrStdout(), id)
			}
			if n := len(resp.Msg.RevokedIds) - 1; n > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "Revoked %s and the %d tokens made with it.\n", args[0], n)
			}
			return nil
		},
	}
}

// expiry says when a token expires, for people.
func expiry(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "expires never"
	}
	t := ts.AsTime()
	return fmt.Sprintf("expires %s (in %s)", t.Local().Format("2006-01-02 15:04 MST"), time.Until(t).Round(time.Second))
}
