// Package s3blob is a blob.Store on S3-compatible object storage (AWS S3,
// versitygw, Ceph RGW, Garage, R2, …), through aws-sdk-go-v2.
//
// Objects live at Prefix+key in one bucket. A Put of up to PartSize bytes
// is one PutObject; a longer (or unknown-length) stream is a multipart
// upload of PartSize parts, one part in memory at a time, completed only
// when every part is stored and aborted when anything fails: S3 makes an
// object visible only on PutObject's or CompleteMultipartUpload's success,
// so readers never see a partial object. Every request is retried with
// exponential backoff and jitter (the SDK's standard retryer, without its
// client-side retry quota) when the failure is transient: connection
// errors, timeouts, 5xx, throttling.
package s3blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/errdefs"
)

// Defaults and bounds of Config.
const (
	DefaultPartSize    = 16 << 20
	MinPartSize        = 5 << 20 // S3's smallest part but the last
	MaxPartSize        = 512 << 20
	DefaultMaxAttempts = 5
	DefaultMaxBackoff  = 20 * time.Second
	DefaultListPage    = 1000
	maxParts           = 10000 // S3's limit
)

// Config says where the objects are and how to reach them.
type Config struct {
	// Endpoint is the server's URL ("https://s3.eu-central-1.amazonaws.com",
	// "http://127.0.0.1:7070"); empty means AWS's endpoint for Region.
	Endpoint string
	Region   string // required by SigV4 even off AWS ("us-east-1" will do)
	Bucket   string
	// Prefix is put in front of every key ("cove/" keeps cove's objects
	// apart from others in a shared bucket). Empty, or ending with "/".
	Prefix string
	// Static credentials (an access key pair, and a session token with
	// temporary credentials).
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// PathStyle addresses the bucket as endpoint/bucket/key instead of
	// bucket.endpoint/key; most self-hosted servers need it.
	PathStyle bool
	// PartSize is the size of a multipart upload's parts and the largest
	// object sent in one PutObject (DefaultPartSize; between MinPartSize
	// and MaxPartSize). A Put holds one part in memory. An object may have
	// up to 10,000 parts: 16 MiB parts allow 156 GiB.
	PartSize int64
	// MaxAttempts bounds the tries of each request (DefaultMaxAttempts);
	// MaxBackoff the wait between two (DefaultMaxBackoff).
	MaxAttempts int
	MaxBackoff  time.Duration
	// ListPage is how many keys each List request asks for (DefaultListPage).
	ListPage int32
	// HTTPClient replaces the SDK's (tests); nil for the default.
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Store is a blob.Store on an S3 bucket.
type Store struct {
	cfg    Config
	client *s3.Client
	log    *slog.Logger
}

var _ blob.Store = (*Store)(nil)

// New checks cfg and makes a Store; it sends no request.
func New(cfg Config) (*Store, error) {
	if err := cfg.check(); err != nil {
		return nil, errdefs.InvalidArgument(fmt.Errorf("s3 storage: %w", err))
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.ListPage == 0 {
		cfg.ListPage = DefaultListPage
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := s3.Options{
		Region:       cfg.Region,
		UsePathStyle: cfg.PathStyle,
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = cfg.MaxAttempts
			o.MaxBackoff = cfg.MaxBackoff
			// The retry quota makes a client that saw many failures
			// stop retrying at all; backups want each request retried.
			o.RateLimiter = ratelimit.None
		}),
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	if cfg.AccessKeyID != "" {
		opts.Credentials = credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken)
	}
	if cfg.HTTPClient != nil {
		opts.HTTPClient = cfg.HTTPClient
	} else {
		opts.HTTPClient = awshttp.NewBuildableClient().
			WithDialerOptions(func(d *net.Dialer) { d.Timeout = 15 * time.Second }).
			WithTransportOptions(func(t *http.Transport) {
				// After a request is sent, a server that says nothing for
				// this long is gone; the request is retried.
				t.ResponseHeaderTimeout = 2 * time.Minute
			})
	}
	return &Store{cfg: cfg, client: s3.New(opts), log: log}, nil
}

func (c *Config) check() error {
	var problems []string
	if c.Bucket == "" {
		problems = append(problems, "no bucket given")
	}
	if c.Region == "" {
		problems = append(problems, "no region given (any name will do off AWS, e.g. us-east-1)")
	}
	if c.Prefix != "" && (!strings.HasSuffix(c.Prefix, "/") || blob.ValidatePrefix(c.Prefix) != nil) {
		problems = append(problems, fmt.Sprintf("prefix %q must be letters, digits, '.', '_', '-' segments ending with '/'", c.Prefix))
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		problems = append(problems, "give both the access key id and the secret access key, or neither")
	}
	if c.PartSize != 0 && (c.PartSize < MinPartSize || c.PartSize > MaxPartSize) {
		problems = append(problems, fmt.Sprintf("part size %d is not between %d and %d bytes", c.PartSize, MinPartSize, MaxPartSize))
	}
	if c.MaxAttempts < 0 || c.MaxBackoff < 0 || c.ListPage < 0 {
		problems = append(problems, "negative retry or list settings")
	}
	if c.Endpoint != "" && !strings.HasPrefix(c.Endpoint, "http://") && !strings.HasPrefix(c.Endpoint, "https://") {
		problems = append(problems, fmt.Sprintf("endpoint %q is not an http:// or https:// URL", c.Endpoint))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func (s *Store) objectKey(key string) *string { return aws.String(s.cfg.Prefix + key) }

// Get implements blob.Store.
func (s *Store) Get(ctx context.Context, key string, rng blob.Range) (io.ReadCloser, error) {
	if err := blob.ValidateKey(key); err != nil {
		return nil, err
	}
	if err := rng.Validate(); err != nil {
		return nil, err
	}
	in := &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: s.objectKey(key)}
	if !rng.IsWhole() {
		r := fmt.Sprintf("bytes=%d-", rng.Offset)
		if rng.Length > 0 {
			r += fmt.Sprint(rng.Offset + rng.Length - 1)
		}
		in.Range = &r
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		return nil, s.classify(err, "get", key)
	}
	return &body{ReadCloser: out.Body, s: s, key: key}, nil
}

// body classifies the errors of a response body that breaks off.
type body struct {
	io.ReadCloser
	s   *Store
	key string
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = b.s.classify(err, "read", b.key)
	}
	return n, err
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, key string) (blob.Info, error) {
	if err := blob.ValidateKey(key); err != nil {
		return blob.Info{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: s.objectKey(key)})
	if err != nil {
		return blob.Info{}, s.classify(err, "stat", key)
	}
	return blob.Info{Key: key, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}, nil
}

// List implements blob.Store, one ListObjectsV2 page at a time.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[blob.Info, error] {
	return func(yield func(blob.Info, error) bool) {
		if err := blob.ValidatePrefix(prefix); err != nil {
			yield(blob.Info{}, err)
			return
		}
		pages := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
			Bucket:  &s.cfg.Bucket,
			Prefix:  aws.String(s.cfg.Prefix + prefix),
			MaxKeys: aws.Int32(s.cfg.ListPage),
		})
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				yield(blob.Info{}, s.classify(err, "list", prefix))
				return
			}
			for _, o := range page.Contents {
				key, ok := strings.CutPrefix(aws.ToString(o.Key), s.cfg.Prefix)
				if !ok || blob.ValidateKey(key) != nil {
					continue // not written through a Store
				}
				info := blob.Info{Key: key, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)}
				if !yield(info, nil) {
					return
				}
			}
		}
	}
}

// Delete implements blob.Store (S3's DeleteObject succeeds for a missing
// key).
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := blob.ValidateKey(key); err != nil {
		return err
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: s.objectKey(key)})
	if err != nil && !blob.IsNotFound(s.classify(err, "delete", key)) {
		return s.classify(err, "delete", key)
	}
	return nil
}
