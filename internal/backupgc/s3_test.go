package backupgc

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/s3blob"
	"github.com/covedev/cove/internal/testutil"
)

// The S3 server of internal/blob/s3blob's tests (scripts/install-deps.sh
// builds it); its credentials are the tests' own, on loopback.
const (
	versitygwVersion = "v1.8.0"
	s3Access         = "cove-test-access"
	s3Secret         = "cove-test-secret-0123456789"
	s3Region         = "us-east-1"
)

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

// startS3 starts versitygw on loopback for the test and returns a function
// giving each caller a store on a bucket of its own.
func startS3(t *testing.T) func(t *testing.T) blob.Store {
	bin := versitygwPath()
	if bin == "" {
		t.Skipf("versitygw %s not built: run scripts/install-deps.sh test (or set COVE_VERSITYGW)", versitygwVersion)
	}
	addr := testutil.FreePort(t)
	var out bytes.Buffer
	cmd := exec.Command(bin, "--access", s3Access, "--secret", s3Secret, "--region", s3Region, "--port", addr, "--quiet", "posix", t.TempDir())
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	testutil.WaitNoError(t, "versitygw to listen on "+addr, func() error {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("versitygw exited: %v\n%s", err, out.String())
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
	client := s3.New(s3.Options{Region: s3Region, BaseEndpoint: aws.String("http://" + addr), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(s3Access, s3Secret, "")})
	n := 0
	return func(t *testing.T) blob.Store {
		n++
		bucket := fmt.Sprintf("cove-gc-%d", n)
		if _, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
			t.Fatalf("create bucket: %v", err)
		}
		s, err := s3blob.New(s3blob.Config{Endpoint: "http://" + addr, Region: s3Region, Bucket: bucket, Prefix: "pre/",
			AccessKeyID: s3Access, SecretAccessKey: s3Secret, PathStyle: true, ListPage: 7})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// The collector on S3-compatible storage (versitygw): what it relies on
// (listings in key order, page by page; 13-byte range reads; modification
// times; idempotent deletes) behaves as on a directory.
func TestGCOnS3(t *testing.T) {
	newS3 := startS3(t)
	for name, f := range map[string]func(*testing.T, blob.Store){
		"RemovesOnlyUnreferencedOld": testRemovesOnlyUnreferencedOld,
		"ConcurrentWriterKeeps":      testConcurrentWriterKeeps,
		"WriterAfterSweepRefused":    testWriterAfterSweepRefused,
		"OtherOrganizationUntouched": testOtherOrganizationUntouched,
		"ForeignObjectsLeft":         testForeignObjectsLeft,
	} {
		t.Run(name, func(t *testing.T) { f(t, newS3(t)) })
	}
}
