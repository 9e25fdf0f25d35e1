package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/covedev/cove/internal/agent"
	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/agent/agenttest"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"golang.org/x/crypto/ssh"
)

// startLogsAgent runs a real agent serving logPath and returns a
// connection to it (the gateway relays the same channel unchanged).
func startLogsAgent(t *testing.T, logPath string) *ssh.Client {
	t.Helper()
	a := agenttest.Start(t, agenttest.Options{Config: agent.Config{LogPath: logPath, User: strconv.Itoa(os.Getuid())}})
	return a.SSH(t, agentproto.DefaultUser)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestStreamLogs(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "lifecycle.log")
	c := startLogsAgent(t, logPath)
	ctx := context.Background()

	var stdout, stderr bytes.Buffer
	code, err := streamLogs(ctx, c, logsRequest{}, &stdout, &stderr)
	if err != nil || code != 1 || !strings.Contains(stderr.String(), "no creation or lifecycle logs yet") {
		t.Errorf("missing log: code %d err %v stderr %q", code, err, stderr.String())
	}

	if err := os.WriteFile(logPath, []byte("Running the postCreateCommand from devcontainer.json...\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	code, err = streamLogs(ctx, c, logsRequest{}, &stdout, &stderr)
	if err != nil || code != 0 || stdout.String() != "Running the postCreateCommand from devcontainer.json...\n" {
		t.Errorf("got %q code %d err %v", stdout.String(), code, err)
	}

	// Follow until cancelled (Ctrl-C).
	fctx, cancel := context.WithCancel(ctx)
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := streamLogs(fctx, c, logsRequest{follow: true}, &out, &stderr)
		done <- err
	}()
	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("later line\n")
	f.Close()
	testutil.WaitNoError(t, "the appended line in the followed output", func() error {
		if got := out.String(); !strings.Contains(got, "later line\n") {
			return fmt.Errorf("got %q", got)
		}
		return nil
	})
	cancel()
	if err := testutil.Receive(t, done, "the follow to end when cancelled"); err != nil {
		t.Errorf("follow: %v", err)
	}
}

func TestStreamServiceLogs(t *testing.T) {
	dir := t.TempDir()
	c := startLogsAgent(t, filepath.Join(dir, "lifecycle.log"))
	ctx := context.Background()

	var stdout, stderr bytes.Buffer
	code, err := streamLogs(ctx, c, logsRequest{service: "db"}, &stdout, &stderr)
	if err != nil || code != 1 || !strings.Contains(stderr.String(), `no logs for service "db"`) {
		t.Errorf("missing service log: code %d err %v stderr %q", code, err, stderr.String())
	}
	if err := os.Mkdir(filepath.Join(dir, "services"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "services", "db.log"), []byte("database system is ready\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	code, err = streamLogs(ctx, c, logsRequest{service: "db"}, &stdout, &stderr)
	if err != nil || code != 0 || stdout.String() != "database system is ready\n" {
		t.Errorf("got %q code %d err %v", stdout.String(), code, err)
	}
	stderr.Reset()
	code, err = streamLogs(ctx, c, logsRequest{service: "../lifecycle"}, &stdout, &stderr)
	if err != nil || code != 1 || !strings.Contains(stderr.String(), "invalid service name") {
		t.Errorf("bad name: code %d err %v stderr %q", code, err, stderr.String())
	}
}

func TestRebuildDone(t *testing.T) {
	running := covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING
	env := func(observed, built int64, phase covev1.EnvironmentPhase, failure string, desired covev1.EnvironmentPhase) *covev1.Environment {
		return &covev1.Environment{
			Metadata: &covev1.EnvironmentMetadata{Name: "dev"},
			Spec:     &covev1.EnvironmentSpec{DesiredPhase: desired, SpecVersion: 5, RebuildGeneration: 2},
			Status:   &covev1.EnvironmentStatus{ObservedSpecVersion: observed, BuiltGeneration: built, Phase: phase, FailureMessage: failure},
		}
	}
	for _, tc := range []struct {
		name    string
		e       *covev1.Environment
		done    bool
		wantErr string
	}{
		{"still running the old build", env(4, 1, running, "", running), false, ""},
		{"observed but not built yet", env(5, 1, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_UPDATING, "", running), false, ""},
		{"rebuilt and running", env(5, 2, running, "", running), true, ""},
		{"old failure is ignored", env(4, 1, running, "old", running), false, ""},
		{"failed", env(5, 1, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED, "pull failed", running), true, "environment dev: pull failed"},
		{"stopped meanwhile", env(6, 1, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED, "", covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED), true, "no longer meant to run"},
	} {
		done, err := rebuildDone(tc.e, 5, 2)
		if done != tc.done || (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: done %v err %v, want %v %q", tc.name, done, err, tc.done, tc.wantErr)
		}
	}
}
