package agent

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/testutil"
	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"
)

func TestExec(t *testing.T) {
	e := newTestEnv(t)
	e.start(t)
	c := e.client(t)

	stdout, stderr, code := run(t, c, "echo hi; echo err >&2; exit 3")
	if stdout != "hi\n" || stderr != "err\n" || code != 3 {
		t.Errorf("got stdout %q stderr %q exit %d, want \"hi\\n\" \"err\\n\" 3", stdout, stderr, code)
	}

	// Base environment, identity variables and the work directory.
	stdout, _, code = run(t, c, `echo "$FROM_IMAGE $USER $LOGNAME $HOME $SHELL $PATH"; pwd`)
	want := "yes me me " + e.dir + " /bin/sh /usr/local/bin:/usr/bin:/bin\n" + e.cfg.WorkDir + "\n"
	if stdout != want || code != 0 {
		t.Errorf("got %q exit %d, want %q", stdout, code, want)
	}

	// Several sessions on one connection, concurrently.
	errs := make(chan string, 10)
	for i := range 10 {
		go func() {
			out, _, code := run(t, c, "echo $((6*7)); exit "+string(rune('0'+i)))
			if out != "42\n" || code != i {
				errs <- out
				return
			}
			errs <- ""
		}()
	}
	for range 10 {
		if got := <-errs; got != "" {
			t.Errorf("concurrent session: %q", got)
		}
	}
}

func TestUnauthorizedKey(t *testing.T) {
	e := newTestEnv(t)
	e.start(t)
	other, _ := newClientKey(t, e.dir, "id_other")
	c, err := dialAgent(e.sock, other)
	if err == nil {
		c.Close()
		t.Fatal("connection with a key not in authorized_keys succeeded")
	}
	if !strings.Contains(err.Error(), "unable to authenticate") {
		t.Errorf("unexpected error: %v", err)
	}
	// The authorized key still works, and the socket is private.
	e.client(t)
	fi, err := os.Stat(e.sock)
	must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestStaleSocket(t *testing.T) {
	e := newTestEnv(t)
	ln, err := net.Listen("unix", e.sock)
	must(t, err)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // leaves a stale socket file behind
	e.start(t)
	out, _, _ := run(t, e.client(t), "echo up")
	if out != "up\n" {
		t.Errorf("got %q", out)
	}
}

func TestClientEnv(t *testing.T) {
	e := newTestEnv(t)
	e.start(t)
	s, err := e.client(t).NewSession()
	must(t, err)
	defer s.Close()
	must(t, s.Setenv("LANG", "C.UTF-8"))
	must(t, s.Setenv("COVE_TEST", "a b"))
	out, err := s.Output(`echo "$LANG|$COVE_TEST"`)
	must(t, err)
	if string(out) != "C.UTF-8|a b\n" {
		t.Errorf("got %q", out)
	}
}

func TestStdinEOF(t *testing.T) {
	e := newTestEnv(t)
	e.start(t)
	data := make([]byte, 3<<20)
	rand.Read(data)
	s, err := e.client(t).NewSession()
	must(t, err)
	defer s.Close()
	s.Stdin = bytes.NewReader(data)
	out, err := s.Output("cat")
	must(t, err)
	if !bytes.Equal(out, data) {
		t.Errorf("cat returned %d bytes, want the %d sent", len(out), len(data))
	}
}

func TestExitSignal(t *testing.T) {
	e := newTestEnv(t)
	e.start(t)
	c := e.client(t)

	err := mustSession(t, c).Run("kill -TERM $$")
	if ee, ok := err.(*gossh.ExitError); !ok || ee.Signal() != "TERM" {
		t.Errorf("kill -TERM: got %v, want exit signal TERM", err)
	}

	// A signal request is forwarded to the process.
	// (Not interrupted, the sleep would end with status 0.)
	s := mustSession(t, c)
	must(t, s.Start("exec sleep 1000"))
	must(t, s.Signal(gossh.SIGUSR1))
	err = s.Wait()
	if ee, ok := err.(*gossh.ExitError); !ok || ee.Signal() != "USR1" {
		t.Errorf("signal USR1: got %v, want exit signal USR1", err)
	}
}

// A background process that keeps stdout open must not hold the session:
// the session ends although the holder outlives the test's patience.
func TestBackgroundOutputHolder(t *testing.T) {
	e := newTestEnv(t)
	e.start(t)
	pidFile := filepath.Join(e.dir, "holder")
	t.Cleanup(func() {
		if data, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	s := mustSession(t, e.client(t))
	var stdout bytes.Buffer
	s.Stdout = &stdout
	done := make(chan error, 1)
	go func() { done <- s.Run("sleep 1000 & echo $! >" + pidFile + "; echo started") }()
	if err := testutil.Receive(t, done, "the session to end while a background process holds its output"); err != nil || stdout.String() != "started\n" {
		t.Errorf("got %q, %v", stdout.String(), err)
	}
}

func TestRunAsUser(t *testing.T) {
	testutil.RequireRoot(t, "to switch users")
	e := newTestEnv(t)
	e.cfg.User = "tester"
	e.start(t)
	out, stderr, code := run(t, e.client(t), `id -u; id -g; id -G; echo "$USER $HOME"; pwd; touch f; stat -c %u:%g f`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 6 {
		t.Fatalf("got %q (stderr %q) exit %d", out, stderr, code)
	}
	home := filepath.Join(e.dir, "home")
	if lines[0] != "65534" || lines[1] != "65534" || !strings.Contains(" "+lines[2]+" ", " 4242 ") ||
		lines[3] != "tester "+home || lines[4] != e.cfg.WorkDir || lines[5] != "65534:65534" {
		t.Errorf("got %q", lines)
	}

	// A missing work directory falls back to the home directory.
	e2 := newTestEnv(t)
	e2.cfg.User = "tester"
	e2.cfg.WorkDir = filepath.Join(e2.dir, "missing")
	e2.start(t)
	out, _, _ = run(t, e2.client(t), "pwd")
	if out != filepath.Join(e2.dir, "home")+"\n" {
		t.Errorf("pwd = %q, want the home directory", out)
	}
}

func mustSession(t *testing.T, c *gossh.Client) *gossh.Session {
	t.Helper()
	s, err := c.NewSession()
	must(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPty(t *testing.T) {
	e := newTestEnv(t)
	e.start(t)
	c := e.client(t)

	s := mustSession(t, c)
	must(t, s.RequestPty("xterm-256color", 40, 80, gossh.TerminalModes{}))
	stdin, err := s.StdinPipe()
	must(t, err)
	var out testutil.Buffer
	s.Stdout = &out
	must(t, s.Shell())

	waitFor := func(want string) {
		t.Helper()
		testutil.WaitNoError(t, strconv.Quote(want)+" on the terminal", func() error {
			if got := out.String(); !strings.Contains(got, want) {
				return fmt.Errorf("got %q", got)
			}
			return nil
		})
	}
	io.WriteString(stdin, "echo \"T=$TERM\"; stty size; tty\n")
	waitFor("T=xterm-256color")
	waitFor("40 80")
	waitFor("/dev/pts/")

	must(t, s.WindowChange(50, 132))
	// The resize and the next command travel separately; ask until it shows
	// (at most every 100 ms).
	var asked time.Time
	testutil.WaitFor(t, "the new size on the terminal", func() bool {
		if strings.Contains(out.String(), "50 132") {
			return true
		}
		if time.Since(asked) >= 100*time.Millisecond {
			io.WriteString(stdin, "stty size\n")
			asked = time.Now()
		}
		return false
	})
	io.WriteString(stdin, "exit 4\n")
	err = s.Wait()
	if ee, ok := err.(*gossh.ExitError); !ok || ee.ExitStatus() != 4 {
		t.Errorf("shell exit: %v, want status 4", err)
	}

	// Output reaches the client byte for byte: no "\n" → "\r\n" rewriting.
	s = mustSession(t, c)
	must(t, s.RequestPty("xterm", 24, 80, gossh.TerminalModes{}))
	raw, err := s.Output(`stty -onlcr; printf 'a\nb\n'`)
	must(t, err)
	if !bytes.Equal(raw, []byte("a\nb\n")) {
		t.Errorf("pty output %q, want %q", raw, "a\nb\n")
	}
}

func TestSFTP(t *testing.T) {
	e := newTestEnv(t)
	wantUID := os.Getuid()
	if os.Geteuid() == 0 {
		e.cfg.User = "tester"
		wantUID = 65534
	}
	e.useSFTPCopy(t)
	e.start(t)

	sc, err := sftp.NewClient(e.client(t))
	must(t, err)
	defer sc.Close()

	content := []byte("hello over sftp\n")
	f, err := sc.Create("hello.txt") // relative to the work directory
	must(t, err)
	_, err = f.Write(content)
	must(t, err)
	must(t, f.Close())

	f, err = sc.Open(filepath.Join(e.cfg.WorkDir, "hello.txt"))
	must(t, err)
	got, err := io.ReadAll(f)
	f.Close()
	must(t, err)
	if !bytes.Equal(got, content) {
		t.Errorf("read back %q", got)
	}

	fi, err := os.Stat(filepath.Join(e.cfg.WorkDir, "hello.txt"))
	must(t, err)
	if uid := int(fi.Sys().(*syscall.Stat_t).Uid); uid != wantUID {
		t.Errorf("file owner %d, want %d", uid, wantUID)
	}
}

func TestDirectTCPIP(t *testing.T) {
	e := newTestEnv(t)
	e.start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()

	conn, err := e.client(t).Dial("tcp", ln.Addr().String())
	must(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "ping through the tunnel")
	must(t, err)
	// Half-close: the echo server sees EOF, finishes, and closes.
	must(t, conn.(interface{ CloseWrite() error }).CloseWrite())
	conn.SetDeadline(time.Now().Add(testutil.Patience(t)))
	got, err := io.ReadAll(conn)
	must(t, err)
	if string(got) != "ping through the tunnel" {
		t.Errorf("echo returned %q", got)
	}

	// A closed port is reported as a failed channel open.
	addr := testutil.RefusedAddr(t)
	if c, err := e.client(t).Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("dial to closed port %s succeeded", addr)
	}
}

func TestHostKeyFile(t *testing.T) {
	e := newTestEnv(t)
	host, hostKeyFile := newClientKey(t, e.dir, "host_key")
	e.cfg.HostKeyPath = hostKeyFile
	e.start(t)
	c, err := net.Dial("unix", e.sock)
	must(t, err)
	defer c.Close()
	var seen gossh.PublicKey
	conf := &gossh.ClientConfig{
		User: agentproto.DefaultUser,
		Auth: []gossh.AuthMethod{gossh.PublicKeys(e.signer)},
		HostKeyCallback: func(_ string, _ net.Addr, key gossh.PublicKey) error {
			seen = key
			return nil
		},
	}
	sc, _, _, err := gossh.NewClientConn(c, "agent", conf)
	must(t, err)
	sc.Close()
	if seen == nil || !bytes.Equal(seen.Marshal(), host.PublicKey().Marshal()) {
		t.Errorf("server presented a different host key")
	}
}

func TestUnknownUser(t *testing.T) {
	e := newTestEnv(t)
	e.cfg.User = "nosuchuser"
	e.start(t)
	_, stderr, code := run(t, e.client(t), "echo never")
	if code != 1 || !strings.Contains(stderr, `user "nosuchuser" not found`) {
		t.Errorf("got exit %d stderr %q", code, stderr)
	}
}
