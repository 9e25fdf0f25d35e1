package build

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/covedev/cove/internal/testutil/testimage"
)

// TestNoNetwork: with NoNetwork a RUN step cannot reach a service on the
// host's loopback.
func TestNoNetwork(t *testing.T) {
	bb, err := testimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	registry := testimage.Serve(t, map[string]v1.Image{"test/busybox:latest": bb})
	b := startBuilder(t, registry)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("host-secret\n"))
			_ = c.Close()
		}
	}()

	src := t.TempDir()
	writeFiles(t, src, map[string]string{"Dockerfile": "FROM " + registry + "/test/busybox:latest\n" +
		"RUN nc -w 3 " + strings.Replace(ln.Addr().String(), ":", " ", 1) + " </dev/null; echo probe-done-$RANDOM\n"})

	var log bytes.Buffer
	_, err = b.Build(ctx, Request{CacheNamespace: "test", ContextDir: src, NoNetwork: true, OutputDir: filepath.Join(t.TempDir(), "oci"), Log: &log})
	if err != nil {
		t.Fatalf("build: %v\n%s", err, log.String())
	}
	if strings.Contains(log.String(), "host-secret") {
		t.Errorf("RUN with NoNetwork reached the host's loopback:\n%s", log.String())
	}
	if !strings.Contains(log.String(), "probe-done") {
		t.Errorf("probe step did not run:\n%s", log.String())
	}

	// Default network mode: report (not assert) whether RUN reaches the
	// host; with buildkitd's "auto" mode and no CNI it does (host network).
	log.Reset()
	_, err = b.Build(ctx, Request{CacheNamespace: "test", ContextDir: src, NoCache: true, OutputDir: filepath.Join(t.TempDir(), "oci"), Log: &log})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	t.Logf("default network mode reaches host loopback: %v", strings.Contains(log.String(), "host-secret"))
}
