package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/atomicfile"
	"github.com/covedev/cove/internal/sshgw"
	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/term"
)

// SSHCommand is `cove ssh`.
func SSHCommand() *cobra.Command {
	var stdio, refresh bool
	cmd := &cobra.Command{
		Use:   "ssh NAME [-- COMMAND...]",
		Short: "Open a shell or run a command in an environment",
		Long: "Open a shell (or run COMMAND) in an environment over the runner's SSH gateway,\n" +
			"with a short-lived certificate the server signs for this one environment.\n" +
			"--stdio is the ProxyCommand that `cove config-ssh` writes for OpenSSH.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := strings.TrimSuffix(args[0], ".cove")
			switch {
			case refresh:
				_, err := refreshCert(cmd.Context(), name)
				return err
			case stdio:
				return proxyStdio(cmd.Context(), name)
			}
			return runSSH(cmd.Context(), name, args[1:])
		},
	}
	cmd.Flags().BoolVar(&stdio, "stdio", false, "connect stdin/stdout to the environment's SSH gateway (ProxyCommand)")
	cmd.Flags().BoolVar(&refresh, "refresh-cert", false, "only write a fresh certificate for OpenSSH")
	_ = cmd.Flags().MarkHidden("refresh-cert")
	return cmd
}

// sshDir holds the CLI's SSH key, certificates and known_hosts.
func sshDir() (string, error) {
	d, err := configDir()
	if err != nil {
		return "", err
	}
	d = filepath.Join(d, "ssh")
	return d, os.MkdirAll(d, 0o700)
}

// userKey loads or creates the CLI's SSH key (and its .pub for OpenSSH).
func userKey() (ssh.Signer, error) {
	d, err := sshDir()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(d, "id_ed25519")
	signer, err := sshgw.LoadOrCreateKey(path, "cove")
	if err != nil {
		return nil, err
	}
	pub := ssh.MarshalAuthorizedKey(signer.PublicKey())
	if b, err := os.ReadFile(path + ".pub"); err == nil && string(b) == string(pub) {
		return signer, nil
	}
	return signer, atomicfile.Write(path+".pub", pub, 0o644)
}

type sshTarget struct {
	signer ssh.Signer
	cert   *ssh.Certificate
	hostCA ssh.PublicKey
	addr   string
}

// certify asks the server for a certificate for environment name.
func certify(ctx context.Context, name string) (*sshTarget, error) {
	c, _, err := clients()
	if err != nil {
		return nil, err
	}
	signer, err := userKey()
	if err != nil {
		return nil, fmt.Errorf("ssh key: %w", err)
	}
	resp, err := c.Environments.SignSSHCertificate(ctx, connect.NewRequest(&covev1.SignSSHCertificateRequest{
		EnvironmentId: name, PublicKey: string(ssh.MarshalAuthorizedKey(signer.PublicKey())),
	}))
	if err != nil {
		return nil, err
	}
	addr := resp.Msg.GetSsh().GetAddress()
	if addr == "" {
		return nil, fmt.Errorf("environment %s is not running (see `cove env get %s`)", name, name)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Msg.Certificate))
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	cert, ok := k.(*ssh.Certificate)
	if !ok {
		return nil, errors.New("server returned a key, not a certificate")
	}
	hostCA, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Msg.HostCa))
	if err != nil {
		return nil, fmt.Errorf("host CA: %w", err)
	}
	return &sshTarget{signer: signer, cert: cert, hostCA: hostCA, addr: addr}, nil
}

// refreshCert writes NAME.cove-cert.pub and the known_hosts entry that
// OpenSSH uses (see config-ssh).
func refreshCert(ctx context.Context, name string) (*sshTarget, error) {
	t, err := certify(ctx, name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cove:", termsafe.String(err.Error()))
		return nil, err
	}
	d, err := sshDir()
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(d, name+".cove-cert.pub"), ssh.MarshalAuthorizedKey(t.cert), 0o644); err != nil {
		return nil, err
	}
	kh := fmt.Sprintf("@cert-authority %s %s", sshgw.HostPrincipal, ssh.MarshalAuthorizedKey(t.hostCA))
	return t, atomicfile.Write(filepath.Join(d, "known_hosts"), []byte(kh), 0o644)
}

// proxyStdio pipes stdin/stdout to the gateway (OpenSSH ProxyCommand).
func proxyStdio(ctx context.Context, name string) error {
	t, err := refreshCert(ctx, name)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", t.addr, 10*time.Second)
	if err != nil {
		return fmt.Errorf("dial gateway %s: %w", t.addr, err)
	}
	defer conn.Close()
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(conn, os.Stdin)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() { _, _ = io.Copy(os.Stdout, conn); done <- struct{}{} }()
	<-done
	return nil
}

// exitError carries a remote command's exit status to main.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// ExitCode returns the process exit code an error asks for, and whether
// it is a remote command's own status (which needs no message).
func ExitCode(err error) (int, bool) {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code, true
	}
	return 1, false
}

func runSSH(ctx context.Context, name string, command []string) error {
	t, err := certify(ctx, name)
	if err != nil {
		return err
	}
	client, err := ssh.Dial("tcp", t.addr, sshgw.ClientConfig(t.signer, t.cert, t.hostCA))
	if err != nil {
		return fmt.Errorf("ssh %s via %s: %w", name, t.addr, err)
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	sess.Stdin, sess.Stdout, sess.Stderr = os.Stdin, os.Stdout, os.Stderr
	interactive := term.IsTerminal(int(os.Stdin.Fd()))
	if len(command) == 0 {
		// An interactive attach: devcontainer.json's postAttachCommand runs
		// first (the agent runs it when asked).
		_ = sess.Setenv(agentproto.EnvPostAttach, "1")
	}
	if interactive {
		restore, err := startPTY(sess)
		if err != nil {
			return err
		}
		defer restore()
	}
	if len(command) == 0 {
		err = sess.Shell()
		if err == nil {
			err = sess.Wait()
		}
	} else {
		err = sess.Run(strings.Join(command, " "))
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return &exitError{code: ee.ExitStatus()}
	}
	var missing *ssh.ExitMissingError
	if errors.As(err, &missing) {
		return &exitError{code: 255}
	}
	return err
}

// startPTY puts the local terminal in raw mode and requests a remote pty
// that follows the local window size.
func startPTY(sess *ssh.Session) (func(), error) {
	fd := int(os.Stdin.Fd())
	w, h, err := term.GetSize(fd)
	if err != nil {
		w, h = 80, 24
	}
	termName := os.Getenv("TERM")
	if termName == "" {
		termName = "xterm-256color"
	}
	if err := sess.RequestPty(termName, h, w, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
		return nil, err
	}
	old, err := term.MakeRaw(fd)
	if err != nil {
		return nil, err
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	go func() {
		for range winch {
			if w, h, err := term.GetSize(fd); err == nil {
				_ = sess.WindowChange(h, w)
			}
		}
	}()
	return func() { signal.Stop(winch); close(winch); _ = term.Restore(fd, old) }, nil
}
