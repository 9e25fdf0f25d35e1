package cli

import (
	"fmt"
	"os"

	"github.com/covedev/cove/internal/image"
	"github.com/spf13/cobra"
)

// UnpackLayerCommand is the hidden `cove internal-unpack-layer DIR`: it
// reads a layer's blob (gzip, zstd or a plain tar) on stdin, unpacks it
// into DIR (which exists and is empty) and prints its diff id. The runner
// runs it in a limited cgroup of its own (runner.UnpackInChild), so that
// decompressing and writing images does not take the host from the
// environments; the runner checks the diff id against the image's.
func UnpackLayerCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "internal-unpack-layer DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			diff, err := image.UnpackLayer(cmd.Context(), args[0], os.Stdin)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), diff.String())
			return err
		},
	}
}
