package content

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/testutil"
	"github.com/covedev/cove/internal/usererr"
)

// git's own words, as git 2.39 and curl print them, and what they mean
// for a retry loop.
func TestGitCategory(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want errdefs.Category
	}{
		{"fatal: unable to access 'https://x.invalid/r.git/': Could not resolve host: x.invalid", errdefs.CategoryUnavailable},
		{"ssh: Could not resolve hostname x.invalid: Temporary failure in name resolution\nfatal: Could not read from remote repository.", errdefs.CategoryUnavailable},
		{"fatal: unable to look up x.invalid (port 9418) (Name or service not known)", errdefs.CategoryUnavailable},
		{"fatal: unable to access 'https://127.0.0.1:1/x.git/': Failed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't connect to server", errdefs.CategoryUnavailable},
		{"ssh: connect to host r.example port 22: Connection refused", errdefs.CategoryUnavailable},
		{"fatal: unable to access 'https://r.example/x/': Failed to connect to r.example port 443: Connection timed out", errdefs.CategoryUnavailable},
		{"ssh: connect to host r.example port 22: Network is unreachable", errdefs.CategoryUnavailable},
		{"fatal: unable to access 'https://r.example/x/': The requested URL returned error: 502", errdefs.CategoryUnavailable},
		{"fatal: unable to access 'https://r.example/x/': The requested URL returned error: 429", errdefs.CategoryUnavailable},
		{"error: RPC failed; curl 18 transfer closed with outstanding read data remaining\nfatal: early EOF\nfatal: fetch-pack: invalid index-pack output", errdefs.CategoryUnavailable},
		{"error: RPC failed; HTTP 503 curl 22 The requested URL returned error: 503", errdefs.CategoryUnavailable},
		{"fatal: the remote end hung up unexpectedly", errdefs.CategoryUnavailable},
		{"remote: Repository not found.\nfatal: repository 'https://github.com/a/b.git/' not found", errdefs.CategoryNotFound},
		{"fatal: unable to access 'https://r.example/x/': The requested URL returned error: 404", errdefs.CategoryNotFound},
		{"warning: Could not find remote branch nope to clone.\nfatal: Remote branch nope not found in upstream origin", errdefs.CategoryNotFound},
		{"fatal: couldn't find remote ref refs/heads/nope", errdefs.CategoryNotFound},
		{"fatal: '/srv/x' does not appear to be a git repository\nfatal: Could not read from remote repository.", errdefs.CategoryNotFound},
		{"fatal: could not read Username for 'https://github.com': terminal prompts disabled", errdefs.CategoryPermissionDenied},
		{"remote: Invalid username or password.\nfatal: Authentication failed for 'https://r.example/x/'", errdefs.CategoryPermissionDenied},
		{"fatal: unable to access 'https://r.example/x/': The requested URL returned error: 403", errdefs.CategoryPermissionDenied},
		{"error: RPC failed; HTTP 401 curl 22 The requested URL returned error: 401\nfatal: early EOF", errdefs.CategoryPermissionDenied},
		{"git@r.example: Permission denied (publickey).\nfatal: Could not read from remote repository.", errdefs.CategoryPermissionDenied},
		{"Host key verification failed.\nfatal: Could not read from remote repository.", errdefs.CategoryPermissionDenied},
		{"fatal: transport 'ext' not allowed", errdefs.CategoryInvalidArgument},
		{"fatal: unable to find remote helper for 'foo'", errdefs.CategoryInvalidArgument},
	} {
		got, ok := gitCategory(tc.out)
		if !ok || got != tc.want {
			t.Errorf("gitCategory(%q) = %s, %v; want %s", tc.out, got, ok, tc.want)
		}
	}
	// What nobody classified keeps the user error's default (terminal).
	for _, out := range []string{"fatal: destination path 'x' already exists and is not an empty directory.", ""} {
		if c, ok := gitCategory(out); ok {
			t.Errorf("gitCategory(%q) = %s, want no category", out, c)
		}
	}
	// A server's own lines decide nothing: a hostile server cannot make a
	// terminal failure look transient, or the reverse, by what it prints.
	for _, out := range []string{
		"remote: Could not resolve host: x\nremote: RPC failed; HTTP 503",
		"remote: Repository not found",
	} {
		if c, ok := gitCategory(out); ok {
			t.Errorf("gitCategory(%q) = %s: the server's words were believed", out, c)
		}
	}
}

// gitServer serves the fixture's repositories over git's smart HTTP
// protocol on loopback, through fault, which may answer instead.
func gitServer(t *testing.T, f *fixture, fault func(w http.ResponseWriter, r *http.Request, next http.Handler)) string {
	t.Helper()
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Skip("git-http-backend is not installed")
	}
	h := &cgi.Handler{
		Path:   backend,
		Stderr: io.Discard,
		Env:    []string{"GIT_PROJECT_ROOT=" + filepath.Dir(f.repo), "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_PARAMETERS='safe.directory'='*'"},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fault(w, r, h) }))
	t.Cleanup(srv.Close)
	return srv.URL
}

// truncating passes through the first limit bytes of a response, then
// drops the connection.
type truncating struct {
	http.ResponseWriter
	limit, n int
}

func (w *truncating) Write(p []byte) (int, error) {
	if w.n+len(p) > w.limit {
		w.ResponseWriter.Write(p[:w.limit-w.n])
		w.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the server closes the connection mid-response
	}
	w.n += len(p)
	return w.ResponseWriter.Write(p)
}

// deadDNS answers every query at 127.0.0.77:53 with SERVFAIL, as a DNS
// server in trouble does, and returns a resolv.conf naming it and the
// count of queries answered. Queries never leave the loopback interface.
func deadDNS(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.77:53")
	if err != nil {
		t.Skipf("cannot serve DNS on 127.0.0.77:53: %v", err)
	}
	var queries atomic.Int32
	var wg sync.WaitGroup
	t.Cleanup(func() { c.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if reply := servfail(buf[:n]); reply != nil {
				queries.Add(1)
				c.WriteTo(reply, from)
			}
		}
	}()
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	must(t, os.WriteFile(conf, []byte("nameserver 127.0.0.77\noptions attempts:1 timeout:5\n"), 0o644))
	return conf, &queries
}

// servfail is the SERVFAIL answer to a DNS query: its header and question.
func servfail(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil
	}
	i := 12
	for i < len(q) && q[i] != 0 {
		i += int(q[i]) + 1
	}
	i += 5 // the root label, QTYPE, QCLASS
	if i > len(q) {
		return nil
	}
	r := append([]byte(nil), q[:i]...)
	r[2] = 0x80 | r[2]&0x01 // QR, keep RD
	r[3] = 0x80 | 2         // RA, RCODE SERVFAIL
	binary.BigEndian.PutUint16(r[6:], 0)
	binary.BigEndian.PutUint16(r[8:], 0)
	binary.BigEndian.PutUint16(r[10:], 0)
	return r
}

// Each failure is performed for real: the clone fails with a clear,
// visible message, the category a retry loop decides by, and an untouched
// workspace.
func TestCloneFailureCategories(t *testing.T) {
	f := newFixture(t)
	closed := testutil.RefusedAddr(t)

	status := func(code int, header ...string) string {
		return gitServer(t, f, func(w http.ResponseWriter, r *http.Request, _ http.Handler) {
			for i := 0; i+1 < len(header); i += 2 {
				w.Header().Set(header[i], header[i+1])
			}
			w.WriteHeader(code)
		})
	}
	// The pack is cut short: the server drops the connection in the middle
	// of the fetch's answer (not the refs').
	cut := gitServer(t, f, func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if r.Method == http.MethodPost && (bytes.Contains(body, []byte("command=fetch")) || bytes.Contains(body, []byte("want "))) {
			w = &truncating{ResponseWriter: w, limit: 64}
		}
		next.ServeHTTP(w, r)
	})
	healthy := gitServer(t, f, func(w http.ResponseWriter, r *http.Request, next http.Handler) { next.ServeHTTP(w, r) })
	resolv, queries := deadDNS(t)

	for _, tc := range []struct {
		name   string
		src    Source
		resolv string
		want   string
		cat    errdefs.Category
	}{
		{"connection refused", Source{GitURL: "http://" + closed + "/myrepo"}, "", "git clone http://" + closed + "/myrepo failed: unable to access", errdefs.CategoryUnavailable},
		{"dns failure", Source{GitURL: "https://git.cove-test.invalid/myrepo"}, resolv, "Could not resolve host: git.cove-test.invalid", errdefs.CategoryUnavailable},
		{"server error", Source{GitURL: status(503) + "/myrepo"}, "", "returned error: 503", errdefs.CategoryUnavailable},
		{"pack cut short", Source{GitURL: cut + "/myrepo"}, "", "git clone " + cut + "/myrepo failed: ", errdefs.CategoryUnavailable},
		{"missing repository", Source{GitURL: healthy + "/missing"}, "", "not found", errdefs.CategoryNotFound},
		{"missing branch", Source{GitURL: healthy + "/myrepo", Ref: "nope"}, "", "Remote branch nope not found", errdefs.CategoryNotFound},
		{"missing commit", Source{GitURL: f.repo, Ref: strings.Repeat("ab", 20)}, "", "commit " + strings.Repeat("ab", 20) + " not found", errdefs.CategoryNotFound},
		{"missing path", Source{GitURL: "file:///nonexistent"}, "", "no such directory", errdefs.CategoryNotFound},
		{"credentials required", Source{GitURL: status(401, "WWW-Authenticate", `Basic realm="git"`) + "/myrepo"}, "", "could not read Username", errdefs.CategoryPermissionDenied},
		{"forbidden", Source{GitURL: status(403) + "/myrepo"}, "", "returned error: 403", errdefs.CategoryPermissionDenied},
		{"refused scheme", Source{GitURL: "ext::sh -c id"}, "", "unsupported git URL", errdefs.CategoryInvalidArgument},
		{"invalid ref", Source{GitURL: healthy + "/myrepo", Ref: "--upload-pack=x"}, "", "invalid git ref", errdefs.CategoryInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := f.opts
			opts.WorkspaceDir = filepath.Join(f.base, tc.name, "ws")
			opts.StagingDir = filepath.Join(f.base, tc.name, "staging")
			opts.ResolvConf = tc.resolv
			must(t, os.MkdirAll(opts.WorkspaceDir, 0o755))
			must(t, os.WriteFile(filepath.Join(opts.WorkspaceDir, "keep.txt"), []byte("keep"), 0o644))
			_, err := Clone(ctxT(t), tc.src, opts)
			msg, ok := usererr.Message(err)
			if !ok || !strings.Contains(msg, tc.want) {
				t.Fatalf("Clone error = %v (user message %q), want a user error containing %q", err, msg, tc.want)
			}
			t.Logf("user message: %s", msg)
			if c := errdefs.CategoryOf(err); c != tc.cat {
				t.Errorf("category %s, want %s (%v)", c, tc.cat, err)
			}
			ents, _ := os.ReadDir(opts.WorkspaceDir)
			if len(ents) != 1 || ents[0].Name() != "keep.txt" {
				t.Errorf("workspace after failure holds %v, want only keep.txt", ents)
			}
			if _, err := os.Stat(opts.StagingDir + ".content-done"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("completion marker after a failed clone: %v", err)
			}
			if tc.resolv != "" && queries.Load() == 0 {
				t.Error("the clone did not ask the test's DNS server")
			}
		})
	}
}
