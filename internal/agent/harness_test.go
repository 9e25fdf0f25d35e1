package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/testutil"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// TestMain lets the test binary play the helper programs the tests need:
// the sftp server the agent spawns, a stdio↔unix-socket pipe for OpenSSH's
// ProxyCommand, and an agent in reaper mode.
func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == "agent" && os.Args[2] == "sftp-server" {
		if err := ServeSFTP(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) == 3 && os.Args[1] == "nc-unix" {
		os.Exit(ncUnix(os.Args[2]))
	}
	if len(os.Args) == 2 && os.Args[1] == "reaper-agent" {
		os.Exit(reaperAgent())
	}
	os.Exit(m.Run())
}

func ncUnix(path string) int {
	c, err := net.Dial("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() {
		io.Copy(c, os.Stdin)
		c.(*net.UnixConn).CloseWrite()
	}()
	io.Copy(os.Stdout, c)
	return 0
}

// helperConfig is the agent configuration passed to the reaper-agent helper.
type helperConfig struct {
	Socket, AuthorizedKeys, Passwd, Group, User, WorkDir string
	PID1                                                 bool // runs as PID 1: no subreaper, no reap knob
	Entrypoints, Command                                 []string
}

func reaperAgent() int {
	var hc helperConfig
	if err := json.Unmarshal([]byte(os.Getenv("COVE_AGENT_HELPER")), &hc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if hc.PID1 != (os.Getpid() == 1) {
		fmt.Fprintln(os.Stderr, "reaper-agent: pid", os.Getpid())
		return 2
	}
	if !hc.PID1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	cfg := Config{
		SocketPath:         hc.Socket,
		AuthorizedKeysPath: hc.AuthorizedKeys,
		User:               hc.User,
		WorkDir:            hc.WorkDir,
		Log:                slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})),
		passwdPath:         hc.Passwd,
		groupPath:          hc.Group,
		reap:               !hc.PID1,
		shutdownGrace:      2 * time.Second,
		Entrypoints:        hc.Entrypoints,
		Command:            hc.Command,
	}
	if err := Run(context.Background(), cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// testEnv is an agent under test.
type testEnv struct {
	dir     string // world-readable, so session users can use it
	sock    string
	signer  gossh.Signer
	keyFile string // the client key in OpenSSH format
	cfg     Config
	logs    *testutil.Buffer
}

// newTestEnv prepares the files an agent needs: keys, passwd and group
// (users "me" = the test's own uid and "tester" = 65534 with supplementary
// group 4242), and a work directory.
func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	dir, err := os.MkdirTemp("", "cove-agent-test-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))

	e := &testEnv{dir: dir, sock: filepath.Join(dir, "agent.sock"), logs: &testutil.Buffer{}}
	e.signer, e.keyFile = newClientKey(t, dir, "id_test")
	authKeys := filepath.Join(dir, "authorized_keys")
	must(t, os.WriteFile(authKeys, gossh.MarshalAuthorizedKey(e.signer.PublicKey()), 0o600))

	home := filepath.Join(dir, "home")
	work := filepath.Join(dir, "work")
	for _, d := range []string{home, work} {
		must(t, os.Mkdir(d, 0o755))
		if os.Geteuid() == 0 {
			must(t, os.Chown(d, 65534, 65534))
		}
	}
	uid, gid := os.Getuid(), os.Getgid()
	passwd := filepath.Join(dir, "passwd")
	group := filepath.Join(dir, "group")
	must(t, os.WriteFile(passwd, fmt.Appendf(nil,
		"me:x:%d:%d::%s:/bin/sh\ntester:x:65534:65534:Tester:%s:/bin/sh\n", uid, gid, dir, home), 0o644))
	must(t, os.WriteFile(group, []byte("nogroup:x:65534:\nextra:x:4242:tester\n"), 0o644))

	e.cfg = Config{
		SocketPath:         e.sock,
		AuthorizedKeysPath: authKeys,
		User:               "me",
		WorkDir:            work,
		Env:                []string{"PATH=/usr/local/bin:/usr/bin:/bin", "FROM_IMAGE=yes"},
		Log:                slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		passwdPath:         passwd,
		groupPath:          group,
		shutdownGrace:      time.Second,
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", e.logs.String())
		}
	})
	return e
}

// exeCopy copies the test binary where every user can run it, and makes it
// the agent's sftp server.
func (e *testEnv) useSFTPCopy(t *testing.T) {
	t.Helper()
	exe, err := os.Executable()
	must(t, err)
	data, err := os.ReadFile(exe)
	must(t, err)
	dst := filepath.Join(e.dir, "cove.test")
	must(t, os.WriteFile(dst, data, 0o755))
	e.cfg.sftpServer = []string{dst, "agent", "sftp-server"}
}

// start runs the agent until the test ends.
func (e *testEnv) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := testutil.Receive(t, done, "the agent to stop"); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitSocket(t, e.sock, done)
}

// waitSocket waits until the agent accepts connections on sock, and fails
// the test if it exits first (done, buffered: its result is put back for
// the cleanup that waits for it).
func waitSocket(t *testing.T, sock string, done chan error) {
	t.Helper()
	testutil.WaitNoError(t, "the agent socket "+sock, func() error {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("agent exited: %v", err)
		default:
		}
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func newClientKey(t *testing.T, dir, name string) (gossh.Signer, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	signer, err := gossh.NewSignerFromKey(priv)
	must(t, err)
	block, err := gossh.MarshalPrivateKey(priv, "")
	must(t, err)
	path := filepath.Join(dir, name)
	must(t, os.WriteFile(path, pem.EncodeToMemory(block), 0o600))
	return signer, path
}

func dialAgent(sock string, signer gossh.Signer) (*gossh.Client, error) {
	c, err := net.DialTimeout("unix", sock, testutil.MaxWait)
	if err != nil {
		return nil, err
	}
	conf := &gossh.ClientConfig{
		User:            agentproto.DefaultUser,
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         testutil.MaxWait,
	}
	sc, chans, reqs, err := gossh.NewClientConn(c, sock, conf)
	if err != nil {
		c.Close()
		return nil, err
	}
	return gossh.NewClient(sc, chans, reqs), nil
}

func (e *testEnv) client(t *testing.T) *gossh.Client {
	t.Helper()
	c, err := dialAgent(e.sock, e.signer)
	if err != nil {
		t.Fatalf("ssh dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// run executes cmd in a new session and returns stdout, stderr and the exit
// status (-1 for a signal).
func run(t *testing.T, c *gossh.Client, cmd string) (string, string, int) {
	t.Helper()
	s, err := c.NewSession()
	must(t, err)
	defer s.Close()
	var stdout, stderr bytes.Buffer
	s.Stdout, s.Stderr = &stdout, &stderr
	code := exitCode(t, s.Run(cmd), &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

func exitCode(t *testing.T, err error, stdout, stderr *bytes.Buffer) int {
	t.Helper()
	switch err := err.(type) {
	case nil:
		return 0
	case *gossh.ExitError:
		if err.Signal() != "" {
			return -1
		}
		return err.ExitStatus()
	default:
		t.Fatalf("session: %v (stdout %q, stderr %q)", err, stdout, stderr)
		return 0
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	must(t, err)
	return n
}
