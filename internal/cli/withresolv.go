package cli

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// WithResolvCommand is the hidden `cove internal-with-resolv FILE -- CMD...`:
// run CMD in a private mount namespace where FILE is /etc/resolv.conf. The
// runner starts buildkitd this way, inside the builder's network namespace,
// so builds resolve names through the runner's DNS relay.
func WithResolvCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "internal-with-resolv FILE -- COMMAND [ARG...]",
		Hidden: true,
		Args:   cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			file, argv := args[0], args[1:]
			path, err := exec.LookPath(argv[0])
			if err != nil {
				return err
			}
			// Namespaces belong to threads: unshare and exec from this one.
			runtime.LockOSThread()
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("unshare mount namespace: %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return fmt.Errorf("make mounts private: %w", err)
			}
			if err := unix.Mount(file, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind %s on /etc/resolv.conf: %w", file, err)
			}
			return unix.Exec(path, argv, os.Environ())
		},
	}
}
