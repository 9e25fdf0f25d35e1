package s3blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/blobtest"
	"github.com/covedev/cove/internal/blob/s3blob"
	"github.com/covedev/cove/internal/blob/s3blob/s3test"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/testutil"
)

func newStore(t *testing.T, cfg s3blob.Config) *s3blob.Store {
	t.Helper()
	s, err := s3blob.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// config is a Store's configuration for bucket on srv: small parts and
// list pages, so that multipart uploads and paging are exercised.
func config(srv *s3test.Server, bucket string) s3blob.Config {
	cfg := srv.Config(bucket, "pre/")
	cfg.PartSize, cfg.ListPage = s3blob.MinPartSize, 7
	return cfg
}

// pendingUploads lists the multipart uploads in progress in bucket.
func pendingUploads(t *testing.T, ctx context.Context, srv *s3test.Server, bucket string) []string {
	t.Helper()
	out, err := srv.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		t.Fatalf("list multipart uploads: %v", err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.ToString(u.Key))
	}
	return keys
}

// The conformance suite against versitygw, each subtest in a bucket of its
// own that also holds objects outside the store's prefix, which the store
// must never show.
func TestConformance(t *testing.T) {
	srv := s3test.Start(t)
	blobtest.Run(t, func(t *testing.T) blob.Store {
		ctx := testutil.Context(t)
		bucket := srv.Bucket(t)
		for _, key := range []string{"outside", "other/x", "pre-not/y"} {
			if _, err := srv.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String(key), Body: strings.NewReader("x")}); err != nil {
				t.Fatal(err)
			}
		}
		return newStore(t, config(srv, bucket))
	}, blobtest.Options{LargeSize: s3blob.MinPartSize*2 + s3blob.MinPartSize/2, ListPage: 7})
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  s3blob.Config
		want string
	}{
		{s3blob.Config{Region: "r"}, "no bucket"},
		{s3blob.Config{Bucket: "b"}, "no region"},
		{s3blob.Config{Bucket: "b", Region: "r", Prefix: "p"}, "prefix"},
		{s3blob.Config{Bucket: "b", Region: "r", Prefix: "/p/"}, "prefix"},
		{s3blob.Config{Bucket: "b", Region: "r", Prefix: "../"}, "prefix"},
		{s3blob.Config{Bucket: "b", Region: "r", AccessKeyID: "a"}, "secret access key"},
		{s3blob.Config{Bucket: "b", Region: "r", PartSize: 1 << 20}, "part size"},
		{s3blob.Config{Bucket: "b", Region: "r", Endpoint: "127.0.0.1:9000"}, "not an http"},
	} {
		_, err := s3blob.New(tc.cfg)
		if !errdefs.Is(err, errdefs.CategoryInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("s3blob.New(%+v) = %v; want an invalid argument error about %q", tc.cfg, err, tc.want)
		}
	}
}

// Wrong credentials are PermissionDenied, which is not retried, and the
// message says what to fix; a missing bucket likewise.
func TestRefusedCredentialsAndMissingBucket(t *testing.T) {
	srv := s3test.Start(t)
	ctx := testutil.Context(t)
	bucket := srv.Bucket(t)
	cfg := config(srv, bucket)
	cfg.SecretAccessKey = "wrong"
	s := newStore(t, cfg)
	err := s.Put(ctx, "k", strings.NewReader("x"), 1)
	if !errdefs.Is(err, errdefs.CategoryPermissionDenied) || errdefs.Retryable(err) || !strings.Contains(err.Error(), "refused the credentials") {
		t.Errorf("put with a wrong secret: %v; want permission denied", err)
	}
	if _, err := s.Stat(ctx, "k"); !errdefs.Is(err, errdefs.CategoryPermissionDenied) {
		t.Errorf("stat with a wrong secret: %v; want permission denied", err)
	}
	s = newStore(t, config(srv, "no-such-bucket"))
	err = s.Put(ctx, "k", strings.NewReader("x"), 1)
	if errdefs.Retryable(err) || !strings.Contains(err.Error(), "no-such-bucket") {
		t.Errorf("put into a missing bucket: %v; want a terminal error naming the bucket", err)
	}
	t.Logf("missing bucket: %v", err)
}

// gate is a reader that stops once it has yielded more than first bytes
// (the Put is then past its first part, which is stored), says so on
// reached, and goes on when proceed is closed.
type gate struct {
	r       io.Reader
	first   int64
	read    int64
	reached chan struct{}
	proceed chan struct{}
}

func (g *gate) Read(p []byte) (int, error) {
	if g.read >= g.first && g.reached != nil {
		close(g.reached)
		g.reached = nil
		<-g.proceed
	}
	n, err := g.r.Read(p)
	g.read += int64(n)
	return n, err
}

// The storage server dies in the middle of a multipart upload: the Put
// fails with a retryable error that says the storage is unreachable, no
// object is visible once the server is back, the leftover upload is
// cleaned up by AbortStale, and the same Put tried again succeeds.
func TestServerKilledMidUpload(t *testing.T) {
	srv := s3test.Start(t)
	ctx := testutil.Context(t)
	bucket := srv.Bucket(t)
	cfg := config(srv, bucket)
	cfg.MaxAttempts = 3
	cfg.MaxBackoff = 1 // nanosecond: a dead server fails fast
	s := newStore(t, cfg)
	data := bytes.Repeat([]byte("0123456789abcdef"), int(cfg.PartSize*5/2/16))

	g := &gate{r: bytes.NewReader(data), first: cfg.PartSize + 1, reached: make(chan struct{}), proceed: make(chan struct{})}
	reached := g.reached
	done := make(chan error, 1)
	go func() { done <- s.Put(ctx, "backup/chunk", g, int64(len(data))) }()
	testutil.Receive(t, reached, "the first part to be stored")
	if got := pendingUploads(t, ctx, srv, bucket); len(got) != 1 {
		t.Fatalf("uploads in progress: %q; want the one of the Put", got)
	}
	srv.Kill()
	close(g.proceed)
	err := testutil.Receive(t, done, "the Put to fail")
	if err == nil {
		t.Fatal("put succeeded with the server dead")
	}
	t.Logf("error: %v", err)
	if !errdefs.Retryable(err) || !errdefs.Is(err, errdefs.CategoryUnavailable) || !strings.Contains(err.Error(), "cannot reach the storage") || !strings.Contains(err.Error(), "backup/chunk") {
		t.Errorf("put with the server dead: %v; want a retryable unavailable error naming the key", err)
	}

	srv.Restart(t)
	blobtest.MustBeMissing(t, s, "backup/chunk")
	// The abort could not reach the dead server: its parts are left,
	// invisible, until AbortStale removes them.
	if got := pendingUploads(t, ctx, srv, bucket); len(got) != 1 {
		t.Errorf("uploads in progress after the crash: %q", got)
	}
	n, err := s.AbortStale(ctx, 0)
	if err != nil || n != 1 {
		t.Errorf("AbortStale = %d, %v; want 1 upload aborted", n, err)
	}
	if got := pendingUploads(t, ctx, srv, bucket); len(got) != 0 {
		t.Errorf("uploads in progress after AbortStale: %q", got)
	}
	// Retried, the Put succeeds.
	if err := s.Put(ctx, "backup/chunk", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("retried put: %v", err)
	}
	if got := blobtest.Read(t, s, "backup/chunk", blob.Range{}); !bytes.Equal(got, data) {
		t.Errorf("read back %d bytes, want %d", len(got), len(data))
	}
}

// A stopped server: every operation fails with a retryable error after
// the configured tries; nothing hangs.
func TestServerDown(t *testing.T) {
	srv := s3test.Start(t)
	ctx := testutil.Context(t)
	cfg := config(srv, srv.Bucket(t))
	cfg.MaxAttempts = 2
	cfg.MaxBackoff = 1
	s := newStore(t, cfg)
	srv.Kill()
	errs := map[string]error{"put": s.Put(ctx, "k", strings.NewReader("x"), 1), "delete": s.Delete(ctx, "k")}
	_, errs["get"] = s.Get(ctx, "k", blob.Range{})
	_, errs["stat"] = s.Stat(ctx, "k")
	for _, err := range s.List(ctx, "") {
		errs["list"] = err
		break
	}
	for op, err := range errs {
		if !errdefs.Is(err, errdefs.CategoryUnavailable) || !strings.Contains(err.Error(), "gave up after 2 tries") {
			t.Errorf("%s with the server down: %v; want unavailable after 2 tries", op, err)
		}
	}
}

// A cancelled multipart Put aborts its upload: no parts are left behind.
func TestCancelledMultipartAborts(t *testing.T) {
	srv := s3test.Start(t)
	ctx := testutil.Context(t)
	bucket := srv.Bucket(t)
	s := newStore(t, config(srv, bucket))
	g := &gate{r: bytes.NewReader(make([]byte, 3*s3blob.MinPartSize)), first: s3blob.MinPartSize + 1, reached: make(chan struct{}), proceed: make(chan struct{})}
	reached := g.reached
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Put(pctx, "k", g, 3*s3blob.MinPartSize) }()
	testutil.Receive(t, reached, "the first part to be stored")
	cancel()
	close(g.proceed)
	if err := testutil.Receive(t, done, "the Put to fail"); !errors.Is(err, context.Canceled) {
		t.Errorf("put = %v; want canceled", err)
	}
	if got := pendingUploads(t, ctx, srv, bucket); len(got) != 0 {
		t.Errorf("uploads left: %q", got)
	}
	blobtest.MustBeMissing(t, s, "k")
}
