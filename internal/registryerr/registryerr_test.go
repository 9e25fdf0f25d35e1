package registryerr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/hostfetch"
	"github.com/covedev/cove/internal/usererr"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const secret = "internal-secret-page: db_password=hunter2"

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func policy(t *testing.T, allow, insecure []string) *hostfetch.Policy {
	t.Helper()
	p, err := hostfetch.New(allow, insecure)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func server(t *testing.T, tls bool, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tls {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

// get fetches ref's manifest as the image store does, through the policy's
// transport, without go-containerregistry's retries (the test looks at one
// answer).
func get(t *testing.T, p *hostfetch.Policy, ref string) error {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	_, err = remote.Get(r, remote.WithContext(ctxT(t)), remote.WithAuth(authn.Anonymous),
		remote.WithTransport(p.Transport()), remote.WithRetryBackoff(remote.Backoff{Steps: 1}))
	if err == nil {
		t.Fatalf("Get %s succeeded", ref)
	}
	return err
}

// check asserts the safe outcome: a user-visible message that repeats
// nothing the server sent, and the category.
func check(t *testing.T, err error, want errdefs.Category, wantMsg string) {
	t.Helper()
	msg, ok := usererr.Message(err)
	if !ok {
		t.Fatalf("not a user error: %v", err)
	}
	if strings.Contains(msg, "hunter2") || strings.Contains(msg, "\x1b") {
		t.Fatalf("the server's words reached the message: %q", msg)
	}
	if !strings.Contains(msg, wantMsg) {
		t.Errorf("message %q, want it to contain %q", msg, wantMsg)
	}
	if c := errdefs.CategoryOf(err); c != want {
		t.Errorf("%q: category %s, want %s", msg, c, want)
	}
}

// A registry that answers every manifest request with one status and a
// hostile body (a secret, terminal escapes, an error message of its own):
// each answer gets its category and a message naming codes only.
func TestRegistryAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		code   string // registry error code in a JSON body, or "" for a plain body
		want   errdefs.Category
		msg    string // %[1]s is the registry host, %[2]s the reference
	}{
		{"404", 404, "", errdefs.CategoryNotFound, `image "%[2]s" not found`},
		{"MANIFEST_UNKNOWN", 404, "MANIFEST_UNKNOWN", errdefs.CategoryNotFound, `image "%[2]s" not found`},
		{"NAME_UNKNOWN under a 400", 400, "NAME_UNKNOWN", errdefs.CategoryNotFound, `image "%[2]s" not found`},
		{"401", 401, "", errdefs.CategoryPermissionDenied, `access to image "%[2]s" denied: unauthorized`},
		{"DENIED", 403, "DENIED", errdefs.CategoryPermissionDenied, `access to image "%[2]s" denied`},
		{"429", 429, "TOOMANYREQUESTS", errdefs.CategoryUnavailable, "registry %[1]s failed: HTTP 429 Too Many Requests (TOOMANYREQUESTS)"},
		{"500", 500, "", errdefs.CategoryUnavailable, "registry %[1]s failed: HTTP 500 Internal Server Error"},
		{"503", 503, "UNAVAILABLE", errdefs.CategoryUnavailable, "registry %[1]s failed: HTTP 503 Service Unavailable (UNAVAILABLE)"},
		{"NAME_INVALID", 400, "NAME_INVALID", errdefs.CategoryInvalidArgument, "registry %[1]s failed: HTTP 400 Bad Request (NAME_INVALID)"},
		{"418", 418, "", errdefs.CategoryFailedPrecondition, "registry %[1]s failed: HTTP 418 I'm a teapot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := server(t, false, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v2/" {
					return // anonymous access
				}
				if tc.code != "" {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(tc.status)
					fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q,"detail":%q},{"code":"\u001b]0;evil\u0007","message":"x"}]}`, tc.code, secret, secret)
					return
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, secret)
			})
			host := strings.TrimPrefix(srv.URL, "http://")
			ref := host + "/probe/x:v1"
			subj := Subject{Kind: "image", Ref: ref, Host: host}
			err := subj.Error(get(t, policy(t, nil, []string{"127.0.0.1"}), ref))
			check(t, err, tc.want, fmt.Sprintf(tc.msg, host, ref))
		})
	}
}

// useDeadResolver makes every DNS query of the process go to a loopback UDP
// port where nothing listens (a DNS server that is down), for the rest of
// the test: lookups fail as they do in a DNS outage, and nothing leaves the
// machine.
func useDeadResolver(t *testing.T) {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := c.LocalAddr().String()
	c.Close()
	saved := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", dead)
	}}
	t.Cleanup(func() { net.DefaultResolver = saved })
}

// Failures before any answer: nothing listens, the name does not resolve
// (the DNS server is down), the connection drops before the answer, the
// download is cut short.
func TestNetworkFailuresAreUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	hangup := server(t, false, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	hangupHost := strings.TrimPrefix(hangup.URL, "http://")

	p := policy(t, nil, []string{"127.0.0.1", "registry.cove-test.invalid"})
	useDeadResolver(t)
	for _, tc := range []struct {
		name, host, msg string
	}{
		{"connection refused", closed, "registry " + closed + " unreachable: dial tcp " + closed + ": connect: connection refused"},
		{"dns", "registry.cove-test.invalid", "registry registry.cove-test.invalid unreachable: lookup registry.cove-test.invalid"},
		{"hang-up", hangupHost, "registry " + hangupHost + " unreachable: the server closed the connection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := tc.host + "/probe/x:v1"
			err := Subject{Kind: "image", Ref: ref, Host: tc.host}.Error(get(t, p, ref))
			check(t, err, errdefs.CategoryUnavailable, tc.msg)
			if !errdefs.Retryable(err) {
				t.Errorf("%v is not retryable", err)
			}
		})
	}

	t.Run("download cut short", func(t *testing.T) {
		srv := server(t, false, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v2/" {
				return
			}
			w.Header().Set("Content-Length", "100000")
			io.WriteString(w, "only the beginning")
		})
		host := strings.TrimPrefix(srv.URL, "http://")
		ref := host + "/probe/x@sha256:" + strings.Repeat("ab", 32)
		d, err := name.NewDigest(ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		l, err := remote.Layer(d, remote.WithContext(ctxT(t)), remote.WithTransport(p.Transport()), remote.WithRetryBackoff(remote.Backoff{Steps: 1}))
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(rc)
		rc.Close()
		if err == nil {
			t.Fatal("a truncated download read without error")
		}
		check(t, Subject{Kind: "image", Ref: ref, Host: host}.Error(err), errdefs.CategoryUnavailable, "was interrupted, try again")
	})
}

// The fetch policy's refusals are PermissionDenied, and the refused
// service is never reached.
func TestPolicyRefusalIsPermissionDenied(t *testing.T) {
	var hits atomic.Int32
	srv := server(t, false, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := host + "/probe/x:v1"
	err := Subject{Kind: "feature", Ref: ref, Host: host, Prefix: `fetch feature "` + ref + `": `}.Error(get(t, policy(t, nil, nil), ref))
	check(t, err, errdefs.CategoryPermissionDenied, `fetch feature "`+ref+`": registry `+host+": ")
	if n := hits.Load(); n != 0 {
		t.Fatalf("the refused registry saw %d requests", n)
	}
}

// TLS problems are the operator's to fix: FailedPrecondition, not retried.
func TestTLSProblems(t *testing.T) {
	tlsSrv := server(t, true, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, secret) })
	plainSrv := server(t, false, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, secret) })
	p := policy(t, []string{"127.0.0.1"}, nil) // allowed, over https only, with the system's roots
	for _, tc := range []struct{ name, url, msg string }{
		{"untrusted certificate", tlsSrv.URL, "its TLS certificate is not trusted by this runner"},
		{"not TLS", "https://" + strings.TrimPrefix(plainSrv.URL, "http://"), "does not speak TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, tc.url+"/f.tgz", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := p.Client().Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("GET %s succeeded", tc.url)
			}
			check(t, Subject{Kind: "feature", Ref: tc.url, Host: req.URL.Host, Server: "server " + req.URL.Host}.Error(err), errdefs.CategoryFailedPrecondition, tc.msg)
		})
	}
}

// A plain HTTP server's status is named by its code alone.
func TestStatus(t *testing.T) {
	s := Subject{Kind: "feature", Ref: "https://x.example/f.tgz", Host: "x.example", Prefix: `fetch feature "https://x.example/f.tgz": `, Server: "server x.example"}
	for code, want := range map[int]errdefs.Category{
		404: errdefs.CategoryNotFound, 410: errdefs.CategoryNotFound, 401: errdefs.CategoryPermissionDenied,
		403: errdefs.CategoryPermissionDenied, 400: errdefs.CategoryInvalidArgument, 429: errdefs.CategoryUnavailable,
		500: errdefs.CategoryUnavailable, 502: errdefs.CategoryUnavailable, 418: errdefs.CategoryFailedPrecondition,
		299: errdefs.CategoryFailedPrecondition,
	} {
		err := s.Status(code)
		check(t, err, want, `fetch feature "https://x.example/f.tgz": server x.example failed: HTTP `+StatusText(code))
	}
	if got := StatusText(599); got != "599" {
		t.Errorf("StatusText(599) = %q", got)
	}
}

// Cancellation is not a user's problem and not shown; other errors that are
// not about the exchange keep their cause and get no category.
func TestNotAboutTheServer(t *testing.T) {
	s := Subject{Kind: "image", Ref: "r.example/x:v1", Host: "r.example"}
	err := s.Error(fmt.Errorf("get: %w", context.Canceled))
	if _, ok := usererr.Message(err); ok || errdefs.CategoryOf(err) != errdefs.CategoryCanceled {
		t.Errorf("canceled: %v (%s)", err, errdefs.CategoryOf(err))
	}
	err = s.Error(fmt.Errorf("get: %w", context.DeadlineExceeded))
	check(t, err, errdefs.CategoryDeadlineExceeded, "registry r.example: timed out")
	disk := errors.New("no space left on device")
	err = s.Error(disk)
	if _, ok := usererr.Message(err); ok || !errors.Is(err, disk) || errdefs.CategoryOf(err) != errdefs.CategoryUnknown {
		t.Errorf("disk error: %v (%s)", err, errdefs.CategoryOf(err))
	}
	if s.Error(nil) != nil {
		t.Error("Error(nil) != nil")
	}
}
