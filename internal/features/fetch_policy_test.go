package features

import (
	"context"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/covedev/cove/internal/hostfetch"
	"github.com/covedev/cove/internal/usererr"
)

// loopbackRegistries is the operator allowance the tests' in-process
// registries and tarball servers need: plain HTTP to 127.0.0.1, any port.
func loopbackRegistries(t *testing.T) *hostfetch.Policy {
	t.Helper()
	return policy(t, nil, []string{"127.0.0.1"})
}

func policy(t *testing.T, allow, insecure []string) *hostfetch.Policy {
	t.Helper()
	p, err := hostfetch.New(allow, insecure)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const secretBody = "internal-secret-page: db_password=hunter2"

// countingServer is a loopback server counting connections.
type countingServer struct {
	*httptest.Server
	conns atomic.Int32
}

func newCountingServer(t *testing.T, tls bool, h http.HandlerFunc) *countingServer {
	t.Helper()
	s := &countingServer{Server: httptest.NewUnstartedServer(h)}
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	if tls {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func (s *countingServer) hostPort() string { return s.Listener.Addr().String() }

func (s *countingServer) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	return pool
}

func resolveMessage(t *testing.T, r *Resolver, id string) string {
	t.Helper()
	_, err := r.Resolve(context.Background(), []Ref{{ID: id}}, t.TempDir(), nil)
	msg, ok := usererr.Message(err)
	if !ok {
		t.Fatalf("%s: not a user error: %v", id, err)
	}
	if strings.Contains(msg, "hunter2") {
		t.Fatalf("%s: the server's body reached the message: %q", id, msg)
	}
	return msg
}

// F8: a feature tarball URL on the runner host's loopback, and an OCI
// feature on a loopback registry, are refused without connecting unless the
// operator allows them; a server's body is never repeated.
func TestFeatureFetchRefusesLoopback(t *testing.T) {
	teapot := newCountingServer(t, true, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, secretBody)
	})
	reg := newRegistry(t)
	ref := reg.publish(t, "features/go:1", writeFeature(t, filepath.Join(t.TempDir(), "go"), optsMeta("go", nil), "echo go\n"))
	blobsBefore := reg.blobGets()

	public := policy(t, nil, nil)
	public.TrustRoots(teapot.roots())
	r := &Resolver{CacheDir: t.TempDir(), Fetch: public}
	for _, id := range []string{"https://" + teapot.hostPort() + "/f.tgz", ref} {
		if msg := resolveMessage(t, r, id); !strings.Contains(msg, "is not allowed (loopback)") {
			t.Errorf("%s: %q, want the address refused", id, msg)
		}
	}
	if msg := resolveMessage(t, r, "http://"+teapot.hostPort()+"/f.tgz"); !strings.Contains(msg, "must use https") {
		t.Errorf("plain http tarball: %q", msg)
	}
	if n := teapot.conns.Load(); n != 0 {
		t.Fatalf("the loopback service saw %d connections", n)
	}
	if reg.blobGets() != blobsBefore {
		t.Fatal("the loopback registry served a blob")
	}

	// Allowed, the teapot's answer is its status code only.
	allowed := policy(t, []string{teapot.hostPort()}, nil)
	allowed.TrustRoots(teapot.roots())
	r = &Resolver{CacheDir: t.TempDir(), Fetch: allowed}
	if msg := resolveMessage(t, r, "https://"+teapot.hostPort()+"/f.tgz"); !strings.HasSuffix(msg, ": HTTP 418 I'm a teapot") {
		t.Errorf("allowed server: %q", msg)
	}
	if teapot.conns.Load() == 0 {
		t.Fatal("the allowed server was not reached")
	}
	// And the loopback registry works once allowed.
	r = &Resolver{CacheDir: t.TempDir(), Fetch: policy(t, nil, []string{reg.host})}
	if _, err := r.Resolve(context.Background(), []Ref{{ID: ref}}, t.TempDir(), nil); err != nil {
		t.Fatalf("allowed registry: %v", err)
	}
}

// F8: a tarball URL that redirects https→http, or to a loopback address,
// is refused and the redirect target is never contacted.
func TestFeatureTarballRedirectsRefused(t *testing.T) {
	target := newCountingServer(t, false, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, secretBody) })
	targetTLS := newCountingServer(t, true, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, secretBody) })
	var to atomic.Value
	redirect := func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, to.Load().(string), http.StatusFound)
	}
	redirTLS := newCountingServer(t, true, redirect)
	redirPlain := newCountingServer(t, false, redirect)
	_, plainPort, _ := net.SplitHostPort(redirPlain.hostPort())

	// The redirecting servers are allowed (one by address and port over
	// https, one by name as an insecure host); the plain target is even
	// listed as insecure: only the redirect rules stop these.
	p := policy(t, []string{redirTLS.hostPort()}, []string{"localhost:" + plainPort, target.hostPort()})
	pool := redirTLS.roots()
	pool.AddCert(targetTLS.Certificate())
	p.TrustRoots(pool)
	r := &Resolver{CacheDir: t.TempDir(), Fetch: p}

	to.Store("http://" + target.hostPort() + "/f.tgz")
	if msg := resolveMessage(t, r, "https://"+redirTLS.hostPort()+"/f.tgz"); !strings.Contains(msg, "redirect refused: from https to http") {
		t.Errorf("https→http redirect: %q", msg)
	}
	to.Store("https://" + targetTLS.hostPort() + "/f.tgz")
	if msg := resolveMessage(t, r, "http://localhost:"+plainPort+"/f.tgz"); !strings.Contains(msg, "address "+targetTLS.hostPort()+" is not allowed (loopback)") {
		t.Errorf("redirect to 127.0.0.1: %q", msg)
	}
	if redirTLS.conns.Load() == 0 || redirPlain.conns.Load() == 0 {
		t.Fatal("the redirecting servers were not reached")
	}
	if n, m := target.conns.Load(), targetTLS.conns.Load(); n != 0 || m != 0 {
		t.Fatalf("redirect targets saw %d and %d connections", n, m)
	}
}
