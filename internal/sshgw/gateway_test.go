package sshgw

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/testutil"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

func TestExecStreamsExitCodeAndEnv(t *testing.T) {
	e := newTestEnv(t)
	c := e.mustDial(t, "env-a", "alice")

	if ok, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err != nil || !ok {
		t.Fatalf("keepalive: %v %v", ok, err)
	}

	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	err = sess.Run("echo out; echo err >&2; exit 3")
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 3 {
		t.Fatalf("Run = %v, want exit status 3", err)
	}
	if stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Fatalf("stdout %q stderr %q", stdout.String(), stderr.String())
	}

	// Environment variables pass through.
	sess, err = c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Setenv("COVE_TEST", "hello world"); err != nil {
		t.Fatalf("Setenv: %v", err)
	}
	out, err := sess.Output("printenv COVE_TEST; echo $AGENT")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "hello world\nenv-a\n" {
		t.Fatalf("output %q", out)
	}

	// A megabyte of stdin comes back intact (flow control, EOF both ways).
	data := make([]byte, 1<<20)
	rand.Read(data)
	sess, err = c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	sess.Stdin = bytes.NewReader(data)
	out, err = sess.Output("cat")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, data) {
		t.Fatalf("cat returned %d bytes, want %d identical", len(out), len(data))
	}
}

func TestPtyAndWindowChange(t *testing.T) {
	e := newTestEnv(t)
	c := e.mustDial(t, "env-a", "alice")
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if err := sess.RequestPty("xterm-256color", 40, 80, ssh.TerminalModes{}); err != nil {
		t.Fatalf("RequestPty: %v", err)
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start("pty-info"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	// gliderlabs translates \n to \r\n on a pty session.
	line, err := r.ReadString('\n')
	if err != nil || line != "term=xterm-256color size=80x40\r\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if err := sess.WindowChange(50, 120); err != nil {
		t.Fatal(err)
	}
	line, err = r.ReadString('\n')
	if err != nil || line != "resize=120x50\r\n" {
		t.Fatalf("second line %q, %v", line, err)
	}
	if err := sess.Wait(); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

func TestSignals(t *testing.T) {
	e := newTestEnv(t)
	c := e.mustDial(t, "env-a", "alice")

	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	stdout, _ := sess.StdoutPipe()
	if err := sess.Start("wait-signal"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	if line, _ := r.ReadString('\n'); line != "ready\n" {
		t.Fatalf("got %q", line)
	}
	if err := sess.Signal(ssh.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if line, _ := r.ReadString('\n'); line != "signal=USR1\n" {
		t.Fatalf("got %q", line)
	}
	if err := sess.Wait(); err != nil {
		t.Fatal(err)
	}

	// exit-signal reaches the client, after the output.
	sess, err = c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output("die-signal")
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.Signal() != "TERM" {
		t.Fatalf("Output = %v, want exit signal TERM", err)
	}
	if string(out) != "dying\n" {
		t.Fatalf("output %q", out)
	}
}

func TestSFTP(t *testing.T) {
	e := newTestEnv(t)
	c := e.mustDial(t, "env-a", "alice")
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatalf("sftp: %v", err)
	}
	defer sc.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "remote.txt")
	data := bytes.Repeat([]byte("cove sftp "), 50000)
	f, err := sc.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(onDisk, data) {
		t.Fatalf("file on agent side: %d bytes, %v", len(onDisk), err)
	}
	f, err = sc.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(f)
	f.Close()
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("read back %d bytes, %v", len(back), err)
	}
	entries, err := sc.ReadDir(dir)
	if err != nil || len(entries) != 1 || entries[0].Name() != "remote.txt" {
		t.Fatalf("ReadDir = %v, %v", entries, err)
	}
}

func TestPortForwarding(t *testing.T) {
	e := newTestEnv(t)
	echo := startEchoServer(t)
	c := e.mustDial(t, "env-a", "alice")

	// Local forward: direct-tcpip through the gateway to the agent.
	conn, err := c.Dial("tcp", echo)
	if err != nil {
		t.Fatalf("direct-tcpip: %v", err)
	}
	echoRoundTrip(t, conn, "hello through the gateway")
	conn.Close()

	// The agent's refusal reaches the client.
	if _, err := c.Dial("tcp", "localhost:1"); err == nil {
		t.Fatal("direct-tcpip to a refused host succeeded")
	} else if !strings.Contains(err.Error(), "administratively prohibited") {
		t.Fatalf("refusal: %v", err)
	}

	// Remote forward: the agent listens and opens forwarded-tcpip channels
	// back to the client through the gateway.
	ln, err := c.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tcpip-forward: %v", err)
	}
	defer ln.Close()
	go func() {
		rc, err := ln.Accept()
		if err != nil {
			return
		}
		defer rc.Close()
		io.Copy(rc, rc)
	}()
	conn, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echoRoundTrip(t, conn, "hello from the environment")
}

func TestNoGoroutineLeaks(t *testing.T) {
	e := newTestEnv(t)
	echo := startEchoServer(t)
	// Warm up lazily started runtime goroutines.
	c := e.mustDial(t, "env-a", "alice")
	c.Close()
	waitGoroutines(t, runtime.NumGoroutine()+50) // settle
	base := runtime.NumGoroutine()

	for range 3 {
		s, cert := e.userCert(t, "env-a", "alice")
		c, err := e.dial(t, s, cert)
		if err != nil {
			t.Fatal(err)
		}
		sess, _ := c.NewSession()
		if out, err := sess.Output("echo hi"); err != nil || string(out) != "hi\n" {
			t.Fatalf("exec %q %v", out, err)
		}
		conn, err := c.Dial("tcp", echo)
		if err != nil {
			t.Fatal(err)
		}
		echoRoundTrip(t, conn, "x")
		// Leave a session and a forward open: closing the connection must
		// clean them up.
		sess, _ = c.NewSession()
		sess.Start("exec sleep 30")
		c.Close()
	}
	waitGoroutines(t, base)

	// Stopping the gateway closes live connections.
	c = e.mustDial(t, "env-a", "alice")
	sess, _ := c.NewSession()
	sess.Start("exec sleep 30")
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() {
		c.Wait()
		close(waited)
	}()
	testutil.Receive(t, waited, "the client connection to close after the gateway stopped")
}

func waitGoroutines(t *testing.T, max int) {
	t.Helper()
	testutil.WaitNoError(t, fmt.Sprintf("at most %d goroutines", max), func() error {
		if n := runtime.NumGoroutine(); n > max {
			buf := make([]byte, 1<<20)
			return fmt.Errorf("%d goroutines:\n%s", n, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}
