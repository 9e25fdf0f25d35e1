package sshgw

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	"golang.org/x/crypto/ssh"
)

// openSSH is an OpenSSH client configuration for a test gateway.
type openSSH struct {
	dir string
	cfg string
}

// newOpenSSH writes a key, its certificate for env, known_hosts trusting
// the CA for cove-gateway, and an ssh_config for host "demo".
func newOpenSSH(t *testing.T, e *testEnv, env, owner string) *openSSH {
	t.Helper()
	testutil.RequireTool(t, "ssh")
	dir := shortTempDir(t)
	priv, s := newKeyPair(t)
	cert, err := e.ca.SignUserCert(s.PublicKey(), env, owner, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "key")
	write := func(path string, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	block, err := ssh.MarshalPrivateKey(priv, "cove test")
	if err != nil {
		t.Fatal(err)
	}
	write(key, pem.EncodeToMemory(block))
	write(key+"-cert.pub", ssh.MarshalAuthorizedKey(cert))
	write(filepath.Join(dir, "known_hosts"), []byte("@cert-authority "+HostPrincipal+" "+e.ca.AuthorizedKey()+"\n"))
	_, port, _ := net.SplitHostPort(e.addr)
	cfg := fmt.Sprintf(`Host demo
  HostName 127.0.0.1
  Port %s
  HostKeyAlias %s
  UserKnownHostsFile %s/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  IdentityFile %s
  CertificateFile %s-cert.pub
  IdentitiesOnly yes
  IdentityAgent none
  BatchMode yes
  PasswordAuthentication no
  KbdInteractiveAuthentication no
  ConnectTimeout %d
  LogLevel ERROR
`, port, HostPrincipal, dir, key, key, int(testutil.Patience(t).Seconds()))
	path := filepath.Join(dir, "ssh_config")
	write(path, []byte(cfg))
	return &openSSH{dir: dir, cfg: path}
}

func (o *openSSH) run(t *testing.T, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + o.dir}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

func TestOpenSSHExecAndExitCode(t *testing.T) {
	e := newTestEnv(t)
	o := newOpenSSH(t, e, "env-a", "alice")

	out, errOut, err := o.run(t, "ssh", "-F", o.cfg, "demo", "--", "echo", "ok")
	if err != nil || out != "ok\n" {
		t.Fatalf("ssh echo ok: out %q err %v stderr %q", out, err, errOut)
	}

	// Environment variables, pty requests and keepalives pass through.
	out, errOut, err = o.run(t, "ssh", "-F", o.cfg, "-o", "SetEnv=COVE_TEST=from-openssh", "-o", "ServerAliveInterval=1",
		"demo", "--", "printenv COVE_TEST; sleep 1.5")
	if err != nil || out != "from-openssh\n" {
		t.Fatalf("ssh SetEnv: out %q err %v stderr %q", out, err, errOut)
	}
	out, errOut, err = o.run(t, "ssh", "-F", o.cfg, "-tt", "demo", "--", "pty-term")
	if err != nil || !strings.HasPrefix(out, "pty=true term=") {
		t.Fatalf("ssh -tt: out %q err %v stderr %q", out, err, errOut)
	}

	out, errOut, err = o.run(t, "ssh", "-F", o.cfg, "demo", "--", "echo out; echo err >&2; exit 7")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("exit code: %v (stderr %q)", err, errOut)
	}
	if out != "out\n" || !strings.Contains(errOut, "err\n") {
		t.Fatalf("streams: out %q stderr %q", out, errOut)
	}

	// A wrong CA in known_hosts makes OpenSSH refuse the gateway.
	other, err := LoadOrCreateCA(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(o.dir, "known_hosts"), []byte("@cert-authority "+HostPrincipal+" "+other.AuthorizedKey()+"\n"), 0o600)
	if _, errOut, err := o.run(t, "ssh", "-F", o.cfg, "demo", "--", "echo", "ok"); err == nil {
		t.Fatal("ssh accepted a gateway signed by an unknown CA")
	} else if !strings.Contains(errOut, "Host key verification failed") {
		t.Fatalf("unexpected failure: %v %q", err, errOut)
	}
}

func TestOpenSSHOwnerMismatchRefused(t *testing.T) {
	e := newTestEnv(t)
	o := newOpenSSH(t, e, "env-b", "alice")
	_, errOut, err := o.run(t, "ssh", "-F", o.cfg, "demo", "--", "echo", "ok")
	if err == nil || !strings.Contains(errOut, "Permission denied") {
		t.Fatalf("ssh with a certificate for someone else's environment: %v %q", err, errOut)
	}
}

func TestOpenSSHSFTP(t *testing.T) {
	e := newTestEnv(t)
	o := newOpenSSH(t, e, "env-a", "alice")
	testutil.RequireTool(t, "sftp")
	data := bytes.Repeat([]byte("0123456789abcdef"), 64*1024)
	local := filepath.Join(o.dir, "local.bin")
	remote := filepath.Join(o.dir, "remote.bin")
	back := filepath.Join(o.dir, "back.bin")
	if err := os.WriteFile(local, data, 0o644); err != nil {
		t.Fatal(err)
	}
	batch := filepath.Join(o.dir, "batch")
	os.WriteFile(batch, []byte(fmt.Sprintf("put %s %s\nget %s %s\nls %s\n", local, remote, remote, back, o.dir)), 0o600)
	out, errOut, err := o.run(t, "sftp", "-F", o.cfg, "-b", batch, "demo")
	if err != nil {
		t.Fatalf("sftp: %v\n%s\n%s", err, out, errOut)
	}
	for _, p := range []string{remote, back} {
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: %d bytes, %v", p, len(got), err)
		}
	}
	if !strings.Contains(out, "remote.bin") {
		t.Fatalf("ls output lacks remote.bin: %q", out)
	}
}

func TestOpenSSHLocalForward(t *testing.T) {
	e := newTestEnv(t)
	o := newOpenSSH(t, e, "env-a", "alice")
	echo := startEchoServer(t)

	// The local end is a unix socket in the test's directory: no TCP port
	// that another program could take between choosing it and ssh binding it.
	local := filepath.Join(o.dir, "fwd.sock")

	cmd := exec.Command("ssh", "-F", o.cfg, "-N", "-o", "ExitOnForwardFailure=yes", "-L", local+":"+echo, "demo")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + o.dir}
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	var conn net.Conn
	testutil.WaitNoError(t, "the local forward", func() error {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("ssh -L exited: %v: %s", err, errOut.String())
		default:
		}
		var err error
		conn, err = net.Dial("unix", local)
		return err
	})
	echoRoundTrip(t, conn, "forwarded by OpenSSH")
	conn.Close()
}
