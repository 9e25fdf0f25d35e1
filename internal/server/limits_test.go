package server_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

// endless is a request body of n bytes, made as it is read (it allocates
// nothing), that counts how much was read.
type endless struct {
	n, read int64
}

func (e *endless) Read(p []byte) (int, error) {
	if e.read >= e.n {
		return 0, io.EOF
	}
	k := min(int64(len(p)), e.n-e.read)
	for i := range p[:k] {
		p[i] = 'x'
	}
	atomic.AddInt64(&e.read, k)
	return int(k), nil
}

// flood is the review's 300 MB body.
const flood = 300 << 20

// TestOversizedUnauthenticatedBody (F11): the review's reproduction, an
// unauthenticated 300 MB JoinRunner body, in-process: refused with a clear
// status, without the server reading more than its limit or allocating
// anything like the body's size.
func TestOversizedUnauthenticatedBody(t *testing.T) {
	h := newHarness(t)
	handler := h.srv.Handler()
	join := "/cove.v1.RunnerService/JoinRunner"

	// Declared length: refused before a byte is read.
	body := &endless{n: flood}
	req := httptest.NewRequest("POST", join, body)
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = flood
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "resource_exhausted") || body.read != 0 {
		t.Fatalf("declared 300 MB: status %d %q, %d bytes read", rec.Code, rec.Body.String(), body.read)
	}

	// Streamed without a length (chunked): cut off at the limit.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	body = &endless{n: flood}
	req = httptest.NewRequest("POST", join, body)
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = -1
	rec = httptest.NewRecorder()
	handler.ServeHTTP(rec, req)
	runtime.ReadMemStats(&after)
	if rec.Code == http.StatusOK || !strings.Contains(rec.Body.String(), "resource_exhausted") {
		t.Fatalf("chunked 300 MB: status %d %q", rec.Code, rec.Body.String())
	}
	if body.read > server.MaxUnauthenticatedBytes+1 {
		t.Fatalf("the server read %d bytes of an unauthenticated body (limit %d)", body.read, server.MaxUnauthenticatedBytes)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > flood/16 {
		t.Fatalf("serving the request allocated %d bytes", grown)
	}
}

// TestOversizedAuthenticatedBody (F11): with credentials the limit is
// larger, but still a limit; a bad token is refused before the body is read.
func TestOversizedAuthenticatedBody(t *testing.T) {
	h := newHarness(t)
	alice := h.owner(t)
	handler := h.srv.Handler()
	for name, tok := range map[string]string{"valid token": alice.tok, "bad token": "cove_pat_nope"} {
		body := &endless{n: flood}
		req := httptest.NewRequest("POST", "/cove.v1.EnvironmentService/CreateEnvironment", body)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		req.ContentLength = -1
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code == http.StatusOK || body.read > server.MaxRequestBytes+1 {
			t.Fatalf("%s: status %d, %d bytes read (limit %d)", name, rec.Code, body.read, server.MaxRequestBytes)
		}
		if name == "bad token" && (rec.Code != http.StatusUnauthorized || body.read != 0) {
			t.Fatalf("bad token: status %d, %d bytes read", rec.Code, body.read)
		}
	}
	// The login form has the small limit too.
	body := &endless{n: flood}
	req := httptest.NewRequest("POST", "/login", body)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.ContentLength = -1
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, req)
	if body.read > server.MaxUnauthenticatedBytes+1 {
		t.Fatalf("login read %d bytes", body.read)
	}
}

// serve runs the API on loopback with the daemon's http.Server.
func serve(t *testing.T, h *harness) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := server.NewHTTPServer(h.srv.Handler())
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return "http://" + ln.Addr().String()
}

// TestSlowBodyCutWatchesLive (F11): over a real connection, a client that
// sends its body too slowly is cut off, while a watch stream opened before
// outlives that deadline.
func TestSlowBodyCutWatchesLive(t *testing.T) {
	h := newHarnessWith(t, func(c *server.Config) { c.RequestBodyTimeout = 200 * time.Millisecond })
	base := serve(t, h)
	alice := h.owner(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watches := h.clientAt(base, alice.tok)
	ws, err := watches.envs.WatchEnvironments(ctx, connect.NewRequest(&covev1.WatchEnvironmentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	ws.ResponseHeader()

	// A slow client: headers, a promise of 100 bytes, then nothing.
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = io.WriteString(conn, "POST /cove.v1.RunnerService/JoinRunner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	if err != nil {
		t.Fatal(err)
	}
	// The server gives up on the body: it answers and closes, or just
	// closes. (The guard only keeps a broken server from hanging the test.)
	_ = conn.SetReadDeadline(time.Now().Add(testutil.Patience(t)))
	if b, err := io.ReadAll(bufio.NewReader(conn)); err != nil {
		t.Fatalf("slow client: the server did not close the connection: %v %q", err, b)
	}

	// The body deadline has passed; the watch still works.
	if _, err := alice.create("late", gitSpec("https://example.com/a.git")); err != nil {
		t.Fatal(err)
	}
	if !ws.Receive() || ws.Msg().Environment.GetMetadata().GetName() != "late" {
		t.Fatalf("watch after the body deadline: %v", ws.Err())
	}
}

// TestGRPCOverH2C: the daemon's server speaks gRPC over unencrypted HTTP/2
// with prior knowledge (no h2c upgrade, which would buffer a whole body).
func TestGRPCOverH2C(t *testing.T) {
	h := newHarness(t)
	base := serve(t, h)
	alice := h.owner(t)
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: p}}
	users := covev1connect.NewUserServiceClient(hc, base, connect.WithGRPC(), bearer(alice.tok))
	resp, err := users.WhoAmI(context.Background(), connect.NewRequest(&covev1.WhoAmIRequest{}))
	if err != nil || resp.Msg.User.Name != "alice" {
		t.Fatalf("gRPC over h2c: %v %v", resp, err)
	}
	// An oversized gRPC message is refused too.
	_, err = users.CreateToken(context.Background(), connect.NewRequest(&covev1.CreateTokenRequest{Name: strings.Repeat("x", server.MaxRequestBytes)}))
	if code(err) != connect.CodeResourceExhausted || !strings.Contains(message(err), "too large") {
		t.Fatalf("oversized gRPC message: %v", err)
	}
}
