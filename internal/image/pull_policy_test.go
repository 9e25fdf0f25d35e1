package image

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/hostfetch"
	"github.com/covedev/cove/internal/usererr"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// loopbackRegistries is the operator allowance tests' in-process registries
// need: plain HTTP to 127.0.0.1, any port.
func loopbackRegistries(t *testing.T) *hostfetch.Policy {
	t.Helper()
	p, err := hostfetch.New(nil, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const secretBody = "internal-secret-page: db_password=hunter2"

func userMessage(t *testing.T, err error) string {
	t.Helper()
	msg, ok := usererr.Message(err)
	if !ok {
		t.Fatalf("not a user error: %v", err)
	}
	if strings.Contains(msg, "hunter2") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("the service's body reached the message: %q", msg)
	}
	return msg
}

// The review's F8 reproduction: an image reference naming a service on the
// runner host's loopback that answers 418 with a secret. The pull must not
// connect at all, and say why.
func TestPullRefusesLoopbackWithoutAllowance(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, secretBody)
	}))
	srv.Config.ConnState = countNew(&conns)
	srv.Start()
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	port := host[strings.LastIndex(host, ":")+1:]

	s, _ := newTestStore(t)
	public, err := hostfetch.New(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetFetchPolicy(public)
	for _, ref := range []string{host + "/probe/x:v1", "localhost:" + port + "/probe/x:v1"} {
		_, err := s.Pull(ctxT(t), ref)
		msg := userMessage(t, err)
		if !strings.Contains(msg, "is not allowed (loopback)") || !strings.Contains(msg, "--insecure-registry") {
			t.Errorf("Pull(%s): %q, want the address refused", ref, msg)
		}
		if c := errdefs.CategoryOf(err); c != errdefs.CategoryPermissionDenied {
			t.Errorf("Pull(%s): category %s, want permission denied (not retried)", ref, c)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the loopback service saw %d connections", n)
	}

	// Allowed by the operator, the same service's answer is summarised by
	// its status code; its body is not repeated.
	s.SetFetchPolicy(loopbackRegistries(t))
	_, err = s.Pull(ctxT(t), host+"/probe/x:v1")
	msg := userMessage(t, err)
	if want := "registry " + host + " failed: HTTP 418 I'm a teapot"; msg != want {
		t.Errorf("allowed service: %q, want %q", msg, want)
	}
	if conns.Load() == 0 {
		t.Fatal("the allowed service was not reached")
	}
}

// A registry's structured errors are named by code, never by their message.
func TestRegistryErrorNamesCodesOnly(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"`+secretBody+`","detail":"`+secretBody+`"},{"code":"\u001b]0;evil\u0007","message":"x"}]}`)
	}))
	srv.Config.ConnState = countNew(&conns)
	srv.Start()
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	s, _ := newTestStore(t)
	_, err := s.Pull(ctxT(t), host+"/probe/x:v1")
	msg := userMessage(t, err)
	if want := "registry " + host + " failed: HTTP 429 Too Many Requests (TOOMANYREQUESTS)"; msg != want {
		t.Errorf("got %q, want %q", msg, want)
	}
	if c := errdefs.CategoryOf(err); c != errdefs.CategoryUnavailable {
		t.Errorf("a rate limit is %s, want unavailable (retried with backoff)", c)
	}
	if conns.Load() == 0 {
		t.Fatal("the registry was not reached")
	}
}

// With the operator's allowance a loopback registry works; an allowance of
// the address alone does not permit plain HTTP.
func TestPullLoopbackRegistryWithAllowance(t *testing.T) {
	requireRoot(t)
	reg := newRegistry(t)
	ref := reg.push(t, "test/allowed:v1", buildImage(t, v1.Config{}, layer(t, entry{name: "f", body: "x"})))

	s, _ := newTestStore(t)
	addrOnly, err := hostfetch.New([]string{"127.0.0.1/32"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetFetchPolicy(addrOnly)
	_, err = s.Pull(ctxT(t), ref)
	if msg := userMessage(t, err); !strings.Contains(msg, "plain HTTP to 127.0.0.1 is not allowed") {
		t.Errorf("plain-HTTP registry allowed by address only: %q", msg)
	}

	insecure, err := hostfetch.New(nil, []string{reg.host})
	if err != nil {
		t.Fatal(err)
	}
	s.SetFetchPolicy(insecure)
	if _, err := s.Pull(ctxT(t), ref); err != nil {
		t.Fatalf("pull from an allowed insecure registry: %v", err)
	}
}

func countNew(n *atomic.Int32) func(c net.Conn, st http.ConnState) {
	return func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			n.Add(1)
		}
	}
}
