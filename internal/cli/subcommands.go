package cli

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/spf13/cobra"

	"github.com/covedev/cove/internal/usererr"
)

// RejectUnknownSubcommands makes every command group under root (root
// included) fail on a word that is none of its subcommands, with cobra's
// suggestions, instead of printing its help and exiting 0 (cobra's
// behaviour for a group without Run) or running the group's own command
// with the word ignored (a group with Run and no Args, like `cove runner`).
// A group given no word still prints its help (or runs, if it runs
// itself).
func RejectUnknownSubcommands(root *cobra.Command) {
	for _, c := range root.Commands() {
		RejectUnknownSubcommands(c)
	}
	if !root.HasSubCommands() || root.Args != nil && !isNoArgs(root.Args) {
		return
	}
	root.Args = unknownSubcommand
	if !root.Runnable() {
		root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
}

// isNoArgs reports whether args is cobra.NoArgs, which refuses the same
// words without suggestions.
func isNoArgs(args cobra.PositionalArgs) bool {
	return reflect.ValueOf(args).Pointer() == reflect.ValueOf(cobra.NoArgs).Pointer()
}

// unknownSubcommand refuses any positional argument of a command group.
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	var b strings.Builder
	fmt.Fprintf(&b, "unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		fmt.Fprintf(&b, "\n\nDid you mean this?\n\t%s\n", strings.Join(s, "\n\t"))
	}
	var names []string
	for _, sub := range cmd.Commands() {
		if sub.IsAvailableCommand() {
			names = append(names, sub.Name())
		}
	}
	fmt.Fprintf(&b, "\n%s commands: %s. Run '%s --help' for usage.", cmd.CommandPath(), strings.Join(names, ", "), cmd.CommandPath())
	return usererr.New("%s", b.String())
}
