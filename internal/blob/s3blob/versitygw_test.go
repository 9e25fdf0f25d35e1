package s3blob

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

	"github.com/covedev/cove/internal/testutil"
)

// versitygwVersion is the S3 server the tests run against; it must match
// scripts/install-deps.sh, which builds it into
// /var/cache/cove-versitygw/<version>/bin.
const versitygwVersion = "v1.8.0"

// Test credentials of the server's root user; it listens on loopback only.
const (
	testAccessKey = "cove-test-access"
	testSecretKey = "cove-test-secret-0123456789"
	testRegion    = "us-east-1"
)

// versitygwPath finds versitygw: $COVE_VERSITYGW, the build of
// scripts/install-deps.sh, or PATH.
func versitygwPath() string {
	if p := os.Getenv("COVE_VERSITYGW"); p != "" {
		return p
	}
	p := filepath.Join("/var/cache/cove-versitygw", versitygwVersion, "bin", "versitygw")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	p, _ = exec.LookPath("versitygw")
	return p
}

// server is a versitygw on loopback with a posix backend in a temporary
// directory. It can be stopped and started again on the same address and
// data, as a storage server that crashes and comes back.
type server struct {
	t        *testing.T
	bin, dir string
	addr     string
	mu       sync.Mutex
	cmd      *exec.Cmd
	out      *bytes.Buffer
	buckets  atomic.Int64
}

// startServer starts versitygw, or skips the test when it is not built.
func startServer(t *testing.T) *server {
	t.Helper()
	bin := versitygwPath()
	if bin == "" {
		t.Skipf("versitygw %s not built: run scripts/install-deps.sh test (or set COVE_VERSITYGW)", versitygwVersion)
	}
	s := &server{t: t, bin: bin, dir: t.TempDir(), addr: testutil.FreePort(t)}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) endpoint() string { return "http://" + s.addr }

func (s *server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatal("versitygw already running")
	}
	s.out = new(bytes.Buffer)
	cmd := exec.Command(s.bin, "--access", testAccessKey, "--secret", testSecretKey,
		"--region", testRegion, "--port", s.addr, "--quiet", "posix", s.dir)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	// It dies with the test binary, whatever happens to the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start versitygw: %v", err)
	}
	s.cmd = cmd
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	testutil.WaitNoError(s.t, "versitygw to listen on "+s.addr, func() error {
		select {
		case err := <-exited:
			s.t.Fatalf("versitygw exited: %v\n%s", err, s.out)
		default:
		}
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
	go func() { err := <-exited; s.exited(cmd, err) }()
}

func (s *server) exited(cmd *exec.Cmd, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == cmd {
		s.t.Logf("versitygw exited by itself: %v\n%s", err, s.out)
		s.cmd = nil
	}
}

// stop kills the server (as a crash would) and waits until it is gone.
func (s *server) stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	// cmd.Wait runs in start's goroutine; the port is free once the
	// process is gone.
	testutil.WaitFor(s.t, "versitygw to exit", func() bool {
		return cmd.Process.Signal(syscall.Signal(0)) != nil
	})
	testutil.WaitFor(s.t, "versitygw's port to close", func() bool {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
}

// client is a plain S3 client for the tests' own checks.
func (s *server) client() *s3.Client {
	return s3.New(s3.Options{
		Region:       testRegion,
		BaseEndpoint: aws.String(s.endpoint()),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(testAccessKey, testSecretKey, ""),
	})
}

// bucket creates a new bucket.
func (s *server) bucket(ctx context.Context) string {
	s.t.Helper()
	name := fmt.Sprintf("cove-test-%d", s.buckets.Add(1))
	if _, err := s.client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name}); err != nil {
		s.t.Fatalf("create bucket %s: %v\n%s", name, err, s.out)
	}
	return name
}

// config is a Store's configuration for bucket on this server.
func (s *server) config(bucket string) Config {
	return Config{
		Endpoint:        s.endpoint(),
		Region:          testRegion,
		Bucket:          bucket,
		Prefix:          "pre/",
		AccessKeyID:     testAccessKey,
		SecretAccessKey: testSecretKey,
		PathStyle:       true,
		PartSize:        MinPartSize,
		ListPage:        7,
	}
}

// pendingUploads lists the multipart uploads in progress in bucket.
func (s *server) pendingUploads(ctx context.Context, bucket string) []string {
	s.t.Helper()
	out, err := s.client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		s.t.Fatalf("list multipart uploads: %v", err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.ToString(u.Key))
	}
	return keys
}
