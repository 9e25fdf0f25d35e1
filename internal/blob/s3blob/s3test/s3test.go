// Package s3test starts the S3-compatible server the tests talk to
// (versitygw, which scripts/install-deps.sh test builds) on loopback, for
// the packages that store backups on S3 in their tests.
package s3test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/covedev/cove/internal/blob/s3blob"
	"github.com/covedev/cove/internal/testutil"
)

// The server's version (as scripts/install-deps.sh builds it) and the
// tests' own credentials, on loopback.
const (
	Version = "v1.8.0"
	Access  = "cove-test-access"
	Secret  = "cove-test-secret-0123456789"
	Region  = "us-east-1"
)

// Path is the versitygw binary: $COVE_VERSITYGW, the build of
// scripts/install-deps.sh, or one on PATH; "" if none.
func Path() string {
	if p := os.Getenv("COVE_VERSITYGW"); p != "" {
		return p
	}
	p := filepath.Join("/var/cache/cove-versitygw", Version, "bin", "versitygw")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	p, _ = exec.LookPath("versitygw")
	return p
}

// Server is a versitygw started for one test.
type Server struct {
	Endpoint string // http://127.0.0.1:port
	client   *s3.Client
	buckets  atomic.Int64

	bin, addr, dir string
	mu             sync.Mutex
	cmd            *exec.Cmd  // the running process, nil once killed
	exited         chan error // its Wait's result
}

// Start starts versitygw on a loopback port with a temporary directory
// behind it, stopped when t ends; t skips (with the reason scripts/test.sh
// refuses in CI) when it is not built.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Path()
	if bin == "" {
		t.Skipf("versitygw %s not built: run scripts/install-deps.sh test (or set COVE_VERSITYGW)", Version)
	}
	addr := testutil.FreePort(t)
	s := &Server{Endpoint: "http://" + addr, bin: bin, addr: addr, dir: t.TempDir()}
	t.Cleanup(s.Kill)
	s.launch(t)
	s.client = s3.New(s3.Options{Region: Region, BaseEndpoint: aws.String(s.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(Access, Secret, "")})
	return s
}

// launch starts versitygw and waits until it listens.
func (s *Server) launch(t testing.TB) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(s.bin, "--access", Access, "--secret", Secret, "--region", Region, "--port", s.addr, "--quiet", "posix", s.dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	testutil.WaitNoError(t, "versitygw to listen on "+s.addr, func() error {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("versitygw exited: %v\n%s", err, out.String())
		default:
		}
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// Kill kills the server (SIGKILL, as a crash would) and waits until it
// is gone: requests in flight break off, new ones are refused.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Restart starts a killed server again, on the same address and over the
// same directory: what it stored before is there.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill()
	s.launch(t)
}

// Client is a plain S3 client of the server, for tests' own checks.
func (s *Server) Client() *s3.Client { return s.client }

// Bucket creates a new bucket and returns its name.
func (s *Server) Bucket(t testing.TB) string {
	t.Helper()
	bucket := fmt.Sprintf("cove-test-%d", s.buckets.Add(1))
	if _, err := s.client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	return bucket
}

// Config is the s3blob configuration of bucket under prefix.
func (s *Server) Config(bucket, prefix string) s3blob.Config {
	return s3blob.Config{Endpoint: s.Endpoint, Region: Region, Bucket: bucket, Prefix: prefix,
		AccessKeyID: Access, SecretAccessKey: Secret, PathStyle: true}
}
