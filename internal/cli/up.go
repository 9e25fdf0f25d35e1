package cli

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
)

// UpCommand is `cove up`: server and runner in one process on embedded
// defaults, with the local CLI logged in.
func UpCommand() *cobra.Command {
	so := serverOptions{}
	ro := runnerOptions{sshListen: "127.0.0.1:7722", proxyListen: "127.0.0.1:7743"}
	var userName string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a server and a runner on this machine (SQLite, local disk) and log the CLI in",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signalContext(cmd.Context())
			defer cancel()
			log := newLogger()
			errc := make(chan error, 2)
			rs, err := startServer(ctx, log, so, errc)
			if err != nil {
				return err
			}
			if userName == "" {
				userName = localUserName()
			}
			prev, _ := loadConfig()
			u, tok, err := rs.srv.Bootstrap(ctx, userName, prev.Token)
			if err != nil {
				return err
			}
			if err := saveConfig(Config{Server: rs.url, Token: tok}); err != nil {
				return fmt.Errorf("log the CLI in: %w", err)
			}
			dir, _ := configDir()
			log.Info("CLI logged in", "user", u.Name, "config", filepath.Join(dir, "config.json"))
			ro.server = rs.url
			ro.serverPublicURL = so.publicURL
			ro.dataDir = filepath.Join(so.dataDir, "runner")
			ro.allowLocal = true
			if _, err := os.Stat(filepath.Join(ro.dataDir, "runner.json")); err != nil {
				if ro.joinToken, err = rs.srv.CreateJoinToken(ctx, u.ID, time.Minute); err != nil {
					return err
				}
			}
			if ro.name == "" {
				ro.name = "local"
			}
			runnerDone := make(chan error, 1)
			go func() { runnerDone <- runRunner(ctx, log, ro) }()
			fmt.Fprintf(cmd.ErrOrStderr(), "cove is up: server %s, SSH gateway %s.\nTry: cove env create ./myrepo --name demo --wait\n", rs.url, ro.sshListen)
			select {
			case err := <-errc:
				cancel()
				<-runnerDone
				return err
			case err := <-runnerDone:
				return err
			case <-ctx.Done():
				// Let the runner finish its shutdown (network cleanup).
				select {
				case err := <-runnerDone:
					return err
				case <-time.After(20 * time.Second):
					return nil
				}
			}
		},
	}
	f := cmd.Flags()
	addServerFlags(cmd, &so)
	f.StringVar(&userName, "user", "", "name of the first user (default: your login name)")
	addRunnerFlags(cmd, &ro)
	return cmd
}

func localUserName() string {
	if n := os.Getenv("SUDO_USER"); n != "" && n != "root" {
		return sanitizeName(n)
	}
	if u, err := user.Current(); err == nil && u.Username != "" && u.Username != "root" {
		return sanitizeName(u.Username)
	}
	return "admin"
}

func sanitizeName(s string) string { return defaultName(s) }
