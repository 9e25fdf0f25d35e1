package e2e

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	"github.com/creack/pty"
)

// lockedBuffer is a terminal's output, read while it is written.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAutoStop (issue 13, "auto-stop that explains itself"): an
// environment with a 20 s inactivity timeout and a 2 min lifetime stays
// running past its inactivity timeout while an OpenSSH session with a pty
// is attached through the gateway; the lifetime warning appears in that
// terminal (its lead scaled down to half the lifetime); once the session
// closes, the server stops the environment after 20 s without activity
// and `cove env get` and `cove env list` say why.
func TestAutoStop(t *testing.T) {
	c := newCluster(t)
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "autostoprepo"), map[string]string{
		".devcontainer/devcontainer.json": `{"image": "` + reg + `/test/busybox:latest"}`,
	})
	u.must("env", "create", repo, "--name", "idle", "--inactivity-timeout", "20s", "--max-lifetime", "2m", "--wait", "--timeout", "3m")
	// A lease holds it while the terminal is being opened (20 s is short
	// on a loaded machine).
	u.must("env", "keepalive", "idle", "--for", "10m", "--reason", "e2e setup")
	if out := u.must("env", "get", "idle"); !strings.Contains(out, "Kept alive by: lease 'e2e setup' by ") {
		t.Fatalf("env get does not show the lease:\n%s", out)
	}

	// An interactive OpenSSH session on a terminal, through the gateway.
	u.must("config-ssh", "--ssh-config", u.sshConf)
	ctx, cancel := context.WithTimeout(context.Background(), testutil.PatienceUpTo(t, 10*time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-F", u.sshConf, "-tt", "idle.cove")
	cmd.Env = append(os.Environ(), "COVE_CONFIG_DIR="+u.cfgDir, "TERM=xterm")
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 200})
	if err != nil {
		t.Fatalf("start OpenSSH on a terminal: %v", err)
	}
	var term lockedBuffer
	copied := make(chan struct{})
	go func() { defer close(copied); _, _ = io.Copy(&term, ptmx) }()
	closed := false
	closeSession := func() {
		if closed {
			return
		}
		closed = true
		_, _ = io.WriteString(ptmx, "exit\r")
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		select {
		case <-waited:
		case <-time.After(testutil.PatienceUpTo(t, time.Minute)):
			_ = cmd.Process.Kill()
			<-waited
		}
		ptmx.Close()
		<-copied
	}
	defer closeSession()

	waitFor(t, "the terminal session to be attached", func() bool {
		return strings.Contains(u.must("env", "get", "idle"), "Kept alive by: ssh session from ")
	})
	u.must("env", "keepalive", "idle", "--stop")
	leaseEnded := time.Now()
	if out := u.must("env", "get", "idle"); strings.Contains(out, "lease 'e2e setup'") {
		t.Fatalf("lease still shown after --stop:\n%s", out)
	}

	// The warning: the lifetime ends in 2 min, so open terminals hear of
	// it 1 min before (half the lifetime, less than the 5 min default).
	waitFor(t, "the auto-stop warning in the terminal", func() bool {
		return strings.Contains(term.String(), "cove: this environment stops at ")
	})
	if out := term.String(); !strings.Contains(out, "(its maximum lifetime of 2 min)") || !strings.Contains(out, "`cove env start idle`") {
		t.Fatalf("warning in the terminal:\n%s", out)
	}
	// It has been more than its inactivity timeout since the lease ended,
	// and it runs: the attached session holds it.
	if since := time.Since(leaseEnded); since < 25*time.Second {
		t.Logf("warning came %s after the lease ended; waiting until 25 s have passed", since.Round(time.Second))
		waitFor(t, "25 s without a lease", func() bool { return time.Since(leaseEnded) >= 25*time.Second })
	}
	got := u.envJSON("idle")
	if ph, want := field(got, "status", "phase"), "ENVIRONMENT_PHASE_RUNNING"; ph != want || field(got, "spec", "desiredPhase") != "ENVIRONMENT_PHASE_RUNNING" {
		t.Fatalf("with a session attached, 25 s after the lease ended: phase %s desired %s; want it running", ph, field(got, "spec", "desiredPhase"))
	}
	if out := u.must("env", "get", "idle"); !strings.Contains(out, "Warned:      open terminals were warned") || !strings.Contains(out, "Stops:       at ") {
		t.Errorf("env get after the warning:\n%s", out)
	}

	// The session ends: 20 s later the server stops it, and says why.
	closeSession()
	waitFor(t, "the environment to stop after the session ended", func() bool {
		return field(u.envJSON("idle"), "status", "phase") == "ENVIRONMENT_PHASE_STOPPED"
	})
	if r := field(u.envJSON("idle"), "spec", "stopReason"); r != "stopped after 20 s without activity" {
		t.Fatalf("stop reason %q", r)
	}
	if out := u.must("env", "get", "idle"); !strings.Contains(out, "Stopped:     stopped after 20 s without activity") {
		t.Errorf("env get:\n%s", out)
	}
	if out := u.must("env", "list"); !strings.Contains(out, "stopped after 20 s without activity") {
		t.Errorf("env list:\n%s", out)
	}
	// Starting it again clears the reason.
	u.must("env", "start", "idle")
	if r := field(u.envJSON("idle"), "spec", "stopReason"); r != "" {
		t.Errorf("stop reason %q after the user's start", r)
	}
}
