package e2e

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/covedev/cove/internal/testutil/testimage"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestFetchPolicy is the review's F8 reproduction: image references and a
// feature URL naming a service on the runner host's loopback, which answers
// 418 with a secret. The harness allows the literal 127.0.0.1 (as an
// operator would for a local registry); "localhost" is not allowed.
func TestFetchPolicy(t *testing.T) {
	c := newCluster(t)
	u := c.user
	const secret = "internal-secret-page: db_password=hunter2"
	var conns atomic.Int32
	stub := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, secret)
	}))
	stub.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	stub.Start()
	t.Cleanup(stub.Close)
	_, port, _ := net.SplitHostPort(stub.Listener.Addr().String())
	bb, err := testimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	reg := testimage.Serve(t, map[string]v1.Image{"test/busybox:latest": bb})

	fail := func(name string, args []string, want string) {
		t.Helper()
		_, errOut, code := u.run(append([]string{"env", "create", "--name", name, "--wait", "--timeout", "2m"}, args...)...)
		msg := field(u.envJSON(name), "status", "failureMessage")
		if code == 0 || !strings.Contains(msg, want) || !strings.Contains(errOut, want) {
			t.Fatalf("%s: exit %d, failureMessage %q, stderr %q; want a failure saying %q", name, code, msg, errOut, want)
		}
		t.Logf("%s: %s", name, msg)
		if strings.Contains(msg+errOut, "hunter2") {
			t.Fatalf("%s: the service's body reached the user: %q", name, msg)
		}
	}
	plain := gitRepo(t, filepath.Join(c.dir, "plain"), map[string]string{"README.md": "x\n"})
	fromDC := gitRepo(t, filepath.Join(c.dir, "dc"), map[string]string{
		".devcontainer/devcontainer.json": `{"image": "localhost:` + port + `/probe/x:v1"}`,
	})
	feature := gitRepo(t, filepath.Join(c.dir, "feature"), map[string]string{
		".devcontainer/devcontainer.json": `{"image": "` + reg + `/test/busybox:latest", "features": {"https://localhost:` + port + `/f.tgz": {}}}`,
	})
	fail("api-image", []string{plain, "--image", "localhost:" + port + "/probe/x:v1"}, "is not allowed (loopback)")
	fail("dc-image", []string{fromDC}, "is not allowed (loopback)")
	fail("feature-url", []string{feature}, "is not allowed (loopback)")
	if n := conns.Load(); n != 0 {
		t.Fatalf("the loopback service saw %d connections", n)
	}

	// Through the operator's allowance the service answers; users learn its
	// status code, not its body.
	fail("allowed", []string{plain, "--image", "127.0.0.1:" + port + "/probe/x:v1"}, "registry 127.0.0.1:"+port+" failed: HTTP 418 I'm a teapot")
}
