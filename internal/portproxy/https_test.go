package portproxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/portproxy"
)

// httpsResolver's environment serves HTTPS (a self-signed certificate) on
// port 8443 and plain HTTP on 8080; HTTPS marks 8443 and, wrongly, 8080 as
// HTTPS ports when wrong is set.
type httpsResolver struct {
	tlsAddr, plainAddr string
}

func (r httpsResolver) Resolve(_ context.Context, id string) (portproxy.Target, error) {
	if id != "env1" {
		return portproxy.Target{}, errors.New("not running here")
	}
	return portproxy.Target{EnvID: "env1", OwnerID: "u-owner",
		Dial: func(ctx context.Context, port int) (net.Conn, error) {
			var d net.Dialer
			switch port {
			case 8443:
				return d.DialContext(ctx, "tcp", r.tlsAddr)
			case 8080:
				return d.DialContext(ctx, "tcp", r.plainAddr)
			}
			return nil, fmt.Errorf("connect to port %d: connection refused", port)
		},
		HTTPS: func(port int) bool { return port == 8443 || port == 8080 },
	}, nil
}

// A port devcontainer.json gives protocol "https" is reached over TLS (the
// application's own self-signed certificate), and its answer comes back to
// the client; an "https" port that speaks plain HTTP gets a message saying
// what to change instead of a generic failure.
func TestHTTPSPort(t *testing.T) {
	app := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls=%v host=%s path=%s", r.TLS != nil, r.Host, r.URL.Path)
	}))
	t.Cleanup(app.Close)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain") }))
	t.Cleanup(plain.Close)
	h := portproxy.New(portproxy.Config{
		Resolver:   httpsResolver{tlsAddr: app.Listener.Addr().String(), plainAddr: plain.Listener.Addr().String()},
		Authorizer: &authorizer{},
		ServerURL:  "http://server.test",
		Now:        func() time.Time { return time.Unix(1_700_000_000, 0) },
	})
	proxy := httptest.NewServer(h)
	t.Cleanup(proxy.Close)

	get := func(path string) (int, string) {
		req, err := http.NewRequest("GET", proxy.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer cove_pat_good")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/p/env1/8443/hello"); code != http.StatusOK || body != "tls=true host=localhost:8443 path=/hello" {
		t.Errorf("https port: %d %q, want 200 and the application's answer over TLS", code, body)
	}
	code, body := get("/p/env1/8080/")
	if code != http.StatusBadGateway || !strings.Contains(body, `does not answer over HTTPS`) || !strings.Contains(body, `protocol "https"`) {
		t.Errorf("plain port marked https: %d %q, want 502 saying to remove protocol https", code, body)
	}
}
