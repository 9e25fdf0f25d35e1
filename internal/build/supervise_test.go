package build

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
)

// scratchBuild builds a registry-free image and checks it worked.
func scratchBuild(ctx context.Context, t *testing.T, b *Builder) {
	t.Helper()
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"Dockerfile": "FROM scratch\nCOPY f /f\n", "f": "x"})
	res, err := b.Build(ctx, Request{CacheNamespace: "test", ContextDir: src, OutputDir: filepath.Join(t.TempDir(), "oci")})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	if got := imageFiles(t, res.Image)["/f"]; got != "x" {
		t.Fatalf("/f = %q", got)
	}
}

func TestRestartAfterCrash(t *testing.T) {
	b := startBuilder(t, "127.0.0.1:1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	b.mu.Lock()
	old, exited := b.cmd.Process.Pid, b.exited
	b.mu.Unlock()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	if err := b.Healthy(ctx); err == nil {
		t.Fatal("Healthy reports a killed buildkitd as healthy")
	}
	scratchBuild(ctx, t, b) // restarts buildkitd
	b.mu.Lock()
	pid := b.cmd.Process.Pid
	b.mu.Unlock()
	if pid == old {
		t.Fatalf("buildkitd pid unchanged (%d) after crash", pid)
	}
	if err := b.Healthy(ctx); err != nil {
		t.Fatalf("Healthy after restart: %v", err)
	}
}

// TestStaleBuildkitd: a runner that restarts finds the buildkitd its
// previous process left running on the same directory, stops it and starts
// its own.
func TestStaleBuildkitd(t *testing.T) {
	first := startBuilder(t, "127.0.0.1:1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	first.mu.Lock()
	stalePid, staleExited := first.cmd.Process.Pid, first.exited
	first.mu.Unlock()

	second, err := New(Config{
		Dir:       first.cfg.Dir,
		Buildkitd: first.cfg.Buildkitd,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Start(ctx); err != nil {
		t.Fatalf("start over a stale buildkitd: %v", err)
	}
	t.Cleanup(func() { _ = second.Stop(context.Background()) })
	testutil.Receive(t, staleExited, fmt.Sprintf("the stale buildkitd %d to exit", stalePid))
	data, err := os.ReadFile(filepath.Join(first.cfg.Dir, "buildkitd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	second.mu.Lock()
	pid := second.cmd.Process.Pid
	second.mu.Unlock()
	if strings.TrimSpace(string(data)) != strconv.Itoa(pid) {
		t.Errorf("pid file %q, want %d", data, pid)
	}
	scratchBuild(ctx, t, second)
}

func TestStopped(t *testing.T) {
	b := startBuilder(t, "127.0.0.1:1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b.mu.Lock()
	exited := b.exited
	b.mu.Unlock()
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	default:
		t.Fatal("buildkitd still running after Stop")
	}
	if _, err := b.Build(ctx, Request{CacheNamespace: "test", ContextDir: t.TempDir(), OutputDir: t.TempDir()}); err == nil {
		t.Fatal("Build on a stopped Builder succeeded")
	}
	if _, err := os.Stat(filepath.Join(b.cfg.Dir, "buildkitd.pid")); !os.IsNotExist(err) {
		t.Errorf("pid file left after Stop: %v", err)
	}
}
