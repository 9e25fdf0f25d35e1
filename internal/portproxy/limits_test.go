package portproxy_test

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/covedev/cove/internal/portproxy"
	"github.com/covedev/cove/internal/testutil"
)

// TestPendingConnectionCap floods the proxy with connections that never
// send an authorized request: beyond the per-source cap a new one is
// closed at once (EOF before any request is read); a connection whose
// request was let through frees its slot and keeps working.
func TestPendingConnectionCap(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "app") }))
	t.Cleanup(app.Close)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := portproxy.New(portproxy.Config{Resolver: resolver{backend: app.Listener.Addr().String()}, Authorizer: &authorizer{}, Log: quiet})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Hours of header timeout: an accepted connection is never closed by
	// the server during the test, so EOF can only mean "refused".
	hs, ln := portproxy.NewServer(h, raw, portproxy.Limits{MaxPending: 10, MaxPendingPerSource: 2, ReadHeaderTimeout: time.Hour}, quiet)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(testutil.Patience(t))) // a hang fails rather than blocks
		return c, bufio.NewReader(c)
	}
	request := func(c net.Conn, br *bufio.Reader, auth string) int {
		req, _ := http.NewRequest("GET", "http://proxy/p/env1/8080/", nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		if err := req.Write(c); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("no response: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	refused := func(c net.Conn, br *bufio.Reader) bool {
		_, err := br.ReadByte()
		return errors.Is(err, io.EOF)
	}

	c1, r1 := dial()
	c2, r2 := dial()
	c3, r3 := dial()
	if !refused(c3, r3) {
		t.Fatal("third pending connection from one source was not closed")
	}
	// Unauthorized requests keep a connection pending...
	if st := request(c2, r2, ""); st != http.StatusUnauthorized {
		t.Fatalf("anonymous: %d", st)
	}
	// ...an authorized one frees its slot, and the connection stays usable.
	if st := request(c1, r1, "cove_pat_good"); st != http.StatusOK {
		t.Fatalf("authorized: %d", st)
	}
	c4, r4 := dial()
	if st := request(c4, r4, ""); st != http.StatusUnauthorized {
		t.Fatalf("connection in the freed slot: %d", st)
	}
	if st := request(c1, r1, "cove_pat_good"); st != http.StatusOK {
		t.Fatalf("authorized connection, second request: %d", st)
	}
	c5, r5 := dial()
	if !refused(c5, r5) {
		t.Fatal("pending connection beyond the cap was not closed")
	}
}

// TestNewServerTimeouts: the proxy's server has header and idle timeouts.
func TestNewServerTimeouts(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	hs, _ := portproxy.NewServer(http.NotFoundHandler(), raw, portproxy.Limits{}, nil)
	if hs.ReadHeaderTimeout != portproxy.DefaultReadHeaderTimeout || hs.IdleTimeout != portproxy.DefaultIdleTimeout || hs.ReadTimeout != 0 {
		t.Fatalf("timeouts: header %v idle %v read %v", hs.ReadHeaderTimeout, hs.IdleTimeout, hs.ReadTimeout)
	}
}
