package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/covedev/cove/internal/atomicfile"
	"github.com/covedev/cove/internal/sshgw"
	"github.com/spf13/cobra"
)

const (
	markStart = "# ------------ START COVE (managed by `cove config-ssh`) ------------"
	markEnd   = "# ------------ END COVE ------------"
)

// ConfigSSHCommand is `cove config-ssh`.
func ConfigSSHCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "config-ssh",
		Short: "Let OpenSSH (and VS Code Remote-SSH, JetBrains Gateway) reach environments as NAME.cove",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := clients(); err != nil {
				return err
			}
			if file == "" {
				home, err := os.UserHomeDir()
				if err != nil {
					return err
				}
				file = filepath.Join(home, ".ssh", "config")
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if _, err := userKey(); err != nil {
				return err
			}
			dir, err := sshDir()
			if err != nil {
				return err
			}
			block := sshConfigBlock(exe, dir)
			if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
				return err
			}
			old, err := os.ReadFile(file)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if err := atomicfile.Write(file, replaceBlock(old, block), 0o600); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Updated %s: `ssh NAME.cove` now reaches your environments.\n", file)
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "ssh-config", "", "ssh config file to update (default ~/.ssh/config)")
	return cmd
}

// sshConfigBlock is the managed part of ssh_config. `Match exec` runs before
// OpenSSH loads identities, so the certificate it writes is fresh for this
// very connection; the environment comes from the certificate, so any user
// name works.
func sshConfigBlock(exe, dir string) string {
	q := func(s string) string { return `"` + s + `"` }
	env := ""
	if d := os.Getenv("COVE_CONFIG_DIR"); d != "" {
		env = "env COVE_CONFIG_DIR=" + d + " "
	}
	return strings.Join([]string{
		markStart,
		fmt.Sprintf("Match host *.cove exec \"%s'%s' ssh --refresh-cert %%n\"", env, exe),
		"Host *.cove",
		fmt.Sprintf("  ProxyCommand %s%s ssh --stdio %%n", env, q(exe)),
		"  HostKeyAlias " + sshgw.HostPrincipal,
		"  UserKnownHostsFile " + q(filepath.Join(dir, "known_hosts")),
		"  StrictHostKeyChecking yes",
		"  IdentityFile " + q(filepath.Join(dir, "id_ed25519")),
		"  CertificateFile " + q(filepath.Join(dir, "%n-cert.pub")),
		"  IdentitiesOnly yes",
		"  ServerAliveInterval 30",
		markEnd,
		"",
	}, "\n")
}

// replaceBlock puts block at the top of an ssh config (first match wins in
// ssh_config), replacing an earlier managed block.
func replaceBlock(old []byte, block string) []byte {
	s := string(old)
	if i := strings.Index(s, markStart); i >= 0 {
		if j := strings.Index(s[i:], markEnd); j >= 0 {
			end := i + j + len(markEnd)
			if end < len(s) && s[end] == '\n' {
				end++
			}
			s = s[:i] + strings.TrimLeft(s[end:], "\n")
		}
	}
	var b bytes.Buffer
	b.WriteString(block)
	if strings.TrimSpace(s) != "" {
		b.WriteString("\n")
		b.WriteString(s)
	}
	return b.Bytes()
}
