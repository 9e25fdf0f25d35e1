package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
	"golang.org/x/net/http2"
)

// cluster is `cove up` plus optional extra runners, all on loopback.
type cluster struct {
	t         *testing.T
	id        string
	bridge    string
	subnet    string
	user      *env
	up        *daemon
	dir       string
	cgroup    string
	runcRoots []string
	server    string
	gateway   string
	proxy     string
	rangeBase uint64
}

func newCluster(t *testing.T) *cluster { return newClusterWith(t) }

// newClusterWith starts `cove up` with extra flags.
func newClusterWith(t *testing.T, extra ...string) *cluster {
	requireTools(t)
	cove := buildCove(t)
	id := fmt.Sprintf("%06d", rand.IntN(1000000))
	dir, err := os.MkdirTemp("/var/tmp", "cove-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, id: id, dir: dir, cgroup: "cove-e2e-" + id, rangeBase: uidRangeBase(t),
		bridge: "cvt" + id, subnet: freeSubnet(t, "10.214")}
	c.server, c.gateway, c.proxy = freePort(t), freePort(t), freePort(t)
	runcRoot := filepath.Join("/run", "cove-e2e-"+id)
	c.runcRoots = []string{runcRoot}
	c.user = &env{t: t, cove: cove, cfgDir: filepath.Join(dir, "user"), sshConf: filepath.Join(dir, "user", "ssh_config")}
	c.up = &daemon{t: t, bin: cove, log: filepath.Join(dir, "up.log"), env: []string{"COVE_CONFIG_DIR=" + c.user.cfgDir}, args: []string{
		"up", "--data-dir", filepath.Join(dir, "data"), "--listen", c.server, "--ssh-listen", c.gateway,
		"--runc-root", runcRoot, "--cgroup-parent", c.cgroup, "--uid-range-base", fmt.Sprint(c.rangeBase),
		"--max-environments", "8", "--runner-timeout", "6s", "--class-memory", fmt.Sprint(1 << 30),
		"--bridge", c.bridge, "--subnet", c.subnet, "--nft-table", "cove-e2e-" + id, "--proxy-listen", c.proxy,
	}}
	if slices.Contains(extra, "--classes") {
		// The file defines every class: no --class-* flag goes with it.
		c.up.args = slices.DeleteFunc(c.up.args, func(a string) bool { return a == "--class-memory" || a == fmt.Sprint(1<<30) })
	}
	c.up.args = append(c.up.args, extra...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cove up log:\n%s", c.up.logTail())
		}
		c.up.stop()
		forceCleanNetwork(c.bridge, "cove-e2e-"+id)
		forceClean(t, dir, c.cgroup, c.runcRoots...)
	})
	c.up.start()
	waitFor(t, "cove up to log the CLI in", func() bool {
		_, _, code := c.user.run("whoami")
		return code == 0
	})
	// The runner joins (and rotates its token) in the background: wait
	// until the server sees it, so creates are scheduled.
	waitFor(t, "cove up's runner to be active", func() bool {
		out, _, code := c.user.run("runner", "list")
		return code == 0 && slices.Contains(strings.Fields(out), "ACTIVE")
	})
	return c
}

// token is the CLI's saved personal access token.
func (c *cluster) token() string {
	var cfg struct{ Token string }
	b, _ := os.ReadFile(filepath.Join(c.user.cfgDir, "config.json"))
	_ = json.Unmarshal(b, &cfg)
	return cfg.Token
}

// TestSpine walks through issue 2's user story end to end.
func TestSpine(t *testing.T) {
	c := newCluster(t)
	u := c.user
	reg := images(t)

	repo := gitRepo(t, filepath.Join(c.dir, "myrepo"), map[string]string{
		"README.md": "hello\n",
		".devcontainer/devcontainer.json": `{
			// JSON with comments, as VS Code writes it
			"image": "` + reg + `/test/debian:latest",
			"remoteUser": "dev",
		}`,
	})

	// Create from a local path and wait until it runs.
	u.must("env", "create", repo, "--name", "demo", "--wait", "--timeout", "3m")

	// cove ssh: streams and exit codes of a remote command.
	out, errOut, code := u.run("ssh", "demo", "--", "uname -a; echo to-stderr >&2; exit 7")
	if code != 7 || !strings.Contains(out, "Linux demo") || !strings.Contains(errOut, "to-stderr") {
		t.Fatalf("cove ssh: code %d, stdout %q, stderr %q", code, out, errOut)
	}

	// Real OpenSSH through `cove config-ssh`.
	u.must("config-ssh", "--ssh-config", u.sshConf)
	out, code = u.ssh("demo.cove", "--", "id -un; pwd; stat -c %U /workspaces/myrepo/README.md")
	if code != 0 || strings.Fields(out)[0] != "dev" || !strings.Contains(out, "/workspaces/myrepo") || strings.Fields(out)[2] != "dev" {
		t.Fatalf("ssh demo.cove: code %d, %q", code, out)
	}
	// Work the user does: in the workspace, and elsewhere on the root fs.
	out, code = u.ssh("demo.cove", "--", `set -e
		echo work > /workspaces/myrepo/work.txt
		printf '#!/bin/sh\necho mytool-ok\n' | sudo tee /usr/local/bin/mytool >/dev/null
		sudo chmod +x /usr/local/bin/mytool
		sudo mkdir -p /opt/cache && echo cached | sudo tee /opt/cache/data >/dev/null`)
	if code != 0 {
		t.Fatalf("write files: %d %s", code, out)
	}

	// scp, sftp, rsync, ssh -L.
	local := filepath.Join(c.dir, "local.txt")
	if err := os.WriteFile(local, []byte("from-laptop\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := u.tool("scp", "-F", u.sshConf, local, "demo.cove:/tmp/scp.txt"); code != 0 {
		t.Fatalf("scp: %s", out)
	}
	batch := filepath.Join(c.dir, "sftp.batch")
	os.WriteFile(batch, []byte("put "+local+" /tmp/sftp.txt\nget /workspaces/myrepo/work.txt "+filepath.Join(c.dir, "got.txt")+"\n"), 0o644)
	if out, code := u.tool("sftp", "-F", u.sshConf, "-b", batch, "demo.cove"); code != 0 {
		t.Fatalf("sftp: %s", out)
	}
	if b, _ := os.ReadFile(filepath.Join(c.dir, "got.txt")); string(b) != "work\n" {
		t.Fatalf("sftp get: %q", b)
	}
	if out, code := u.tool("rsync", "-a", "-e", "ssh -F "+u.sshConf, repo+"/", "demo.cove:/tmp/rsynced/"); code != 0 {
		t.Fatalf("rsync: %s", out)
	}
	out, _ = u.ssh("demo.cove", "--", "cat /tmp/scp.txt /tmp/sftp.txt; ls /tmp/rsynced")
	if strings.Count(out, "from-laptop") != 2 || !strings.Contains(out, "README.md") {
		t.Fatalf("copied files: %q", out)
	}
	testLocalForward(t, u)

	// list and get.
	if out := u.must("env", "list"); !strings.Contains(out, "demo") || !strings.Contains(out, "RUNNING") {
		t.Fatalf("env list: %s", out)
	}
	j := u.envJSON("demo")
	if field(j, "status", "phase") != "ENVIRONMENT_PHASE_RUNNING" || field(j, "status", "ssh", "host") != "demo.cove" ||
		field(j, "status", "ssh", "address") != c.gateway || field(j, "status", "failureMessage") != "" {
		t.Fatalf("env get -o json: %v", j)
	}

	// Stop and start: everything the user wrote is still there.
	u.must("env", "stop", "demo", "--wait")
	if field(u.envJSON("demo"), "status", "phase") != "ENVIRONMENT_PHASE_STOPPED" {
		t.Fatal("not stopped")
	}
	if _, code := u.ssh("demo.cove", "--", "true"); code == 0 {
		t.Fatal("ssh into a stopped environment succeeded")
	}
	u.must("env", "start", "demo", "--wait")
	checkPersisted(t, u)

	// Kill the runner (cove up) with -9 while the environment runs; it keeps
	// running, and the restarted runner adopts it.
	startsBefore := c.up.count("step=start ")
	c.up.kill9()
	c.up.start()
	waitFor(t, "cove up to come back", func() bool { _, _, code := u.run("whoami"); return code == 0 })
	waitFor(t, "the environment to be reachable again", func() bool {
		_, code := u.ssh("demo.cove", "--", "true")
		return code == 0
	})
	checkPersisted(t, u)
	if n := c.up.count("step=start "); n != startsBefore {
		t.Fatalf("the restarted runner started the container again (%d starts, want %d) instead of adopting it", n, startsBefore)
	}

	// Delete: nothing left on the host.
	u.must("env", "delete", "demo", "--wait")
	if out := u.must("env", "list"); strings.Contains(out, "demo") {
		t.Fatalf("deleted env still listed: %s", out)
	}
	left, zombies := hostLeftovers(c.dir, c.cgroup, c.runcRoots[0], c.rangeBase, c.rangeBase+8*65536)
	if len(left) > 0 {
		t.Fatalf("left on the host after delete:\n%s", strings.Join(left, "\n"))
	}
	if len(zombies) > 0 {
		t.Logf("zombies reparented to this sandbox's non-reaping PID 1 (killed runner): %v", zombies)
	}
	if ents, _ := os.ReadDir(filepath.Join(c.dir, "data", "runner", "envs")); len(ents) != 0 {
		t.Fatalf("environment directories left: %v", ents)
	}
	// With nothing running, a stopped runner leaves no bridge or rules.
	c.up.stop()
	if left := networkLeftovers(c.bridge, "cove-e2e-"+c.id); len(left) > 0 {
		t.Fatalf("network left after the runner stopped with no environments: %v", left)
	}
}

func checkPersisted(t *testing.T, u *env) {
	t.Helper()
	out, code := u.ssh("demo.cove", "--", "cat /workspaces/myrepo/work.txt; mytool; cat /opt/cache/data")
	if code != 0 || out != "work\nmytool-ok\ncached\n" {
		t.Fatalf("files lost: code %d, %q", code, out)
	}
}

// testLocalForward runs a TCP echo server inside the environment (perl is
// in every Debian image) and reaches it with ssh -L.
func testLocalForward(t *testing.T, u *env) {
	t.Helper()
	server := `perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>"127.0.0.1:8765",Listen=>5,ReuseAddr=>1) or die; print "listening\n"; $|=1; while($c=$s->accept){$l=<$c>; print $c "echo:$l"; close $c}'`
	out, code := u.ssh("demo.cove", "--", "nohup "+server+" >/tmp/echo.log 2>&1 & sleep 0.5; cat /tmp/echo.log")
	if code != 0 || !strings.Contains(out, "listening") {
		t.Fatalf("echo server: %d %q", code, out)
	}
	lport := freePort(t)
	ctxCmd := u.sshBackground("-N", "-L", lport+":127.0.0.1:8765", "demo.cove")
	defer ctxCmd()
	var reply string
	waitFor(t, "ssh -L to forward", func() bool {
		conn, err := net.DialTimeout("tcp", lport, time.Second)
		if err != nil {
			return false
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(conn, "ping\n")
		b := make([]byte, 64)
		n, _ := conn.Read(b)
		reply = string(b[:n])
		return reply != ""
	})
	if reply != "echo:ping\n" {
		t.Fatalf("forwarded reply %q", reply)
	}
}

// TestRunnerKilledMidCreate: a runner killed while it creates an environment
// finishes the half-done steps after it restarts.
func TestRunnerKilledMidCreate(t *testing.T) {
	c := newCluster(t)
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "repo"), map[string]string{"README.md": "x\n"})
	u.must("env", "create", repo, "--name", "half", "--image", reg+"/test/debian:latest")
	waitFor(t, "the clone step", func() bool { return c.up.count("step=clone ") > 0 })
	c.up.kill9()
	c.up.start()
	waitFor(t, "cove up to come back", func() bool { _, _, code := u.run("whoami"); return code == 0 })
	u.must("env", "start", "half", "--wait", "--timeout", "2m")
	if out, _, code := u.run("ssh", "half", "--", "cat /workspaces/repo/README.md"); code != 0 || out != "x\n" {
		t.Fatalf("ssh after an interrupted create: %d %q", code, out)
	}
	u.must("env", "delete", "half", "--wait")
	if left, _ := hostLeftovers(c.dir, c.cgroup, c.runcRoots[0], c.rangeBase, c.rangeBase+8*65536); len(left) > 0 {
		t.Fatalf("left on the host:\n%s", strings.Join(left, "\n"))
	}
}

// TestAPIProtocols: the API answers plain JSON over HTTP/1.1 (curl) and
// gRPC over h2c, both authenticated.
func TestAPIProtocols(t *testing.T) {
	c := newCluster(t)
	var cfg struct{ Server, Token string }
	b, err := os.ReadFile(filepath.Join(c.user.cfgDir, "config.json"))
	if err != nil || json.Unmarshal(b, &cfg) != nil {
		t.Fatalf("cli config: %v %s", err, b)
	}
	post := func(token string) (int, string) {
		req, _ := http.NewRequest("POST", cfg.Server+"/cove.v1.UserService/WhoAmI", strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := post(cfg.Token); code != 200 || !strings.Contains(body, `"role":"owner"`) {
		t.Fatalf("JSON WhoAmI: %d %s", code, body)
	}
	if code, body := post(""); code != 401 || !strings.Contains(body, "unauthenticated") {
		t.Fatalf("JSON WhoAmI without a token: %d %s", code, body)
	}
	h2c := &http.Client{Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	// A token made with `cove token create` logs another machine in.
	tok := strings.TrimSpace(c.user.must("token", "create", "--name", "laptop"))
	other := &env{t: t, cove: c.user.cove, cfgDir: filepath.Join(c.dir, "laptop")}
	other.must("login", "--server", cfg.Server, "--token", tok)
	if out := other.must("whoami"); !strings.Contains(out, "(owner)") {
		t.Fatalf("whoami with a created token: %q", out)
	}
	users := covev1connect.NewUserServiceClient(h2c, cfg.Server, connect.WithGRPC(), connect.WithInterceptors(apiclient.Bearer(cfg.Token)))
	who, err := users.WhoAmI(context.Background(), connect.NewRequest(&covev1.WhoAmIRequest{}))
	if err != nil || who.Msg.User.Role != "owner" {
		t.Fatalf("gRPC WhoAmI: %v %v", who, err)
	}
}
