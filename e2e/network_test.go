package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/testutil"
)

// outsideNS makes a network namespace playing "the internet": a veth from the
// host (198.51.100.1) to it (198.51.100.2), with the test binary serving HTTP
// and DNS there. Only this namespace and loopback are ever sent traffic.
func outsideNS(t *testing.T, id string) {
	t.Helper()
	ns, hostIf := "cove-out-"+id, "cvo"+id
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	run("ip", "netns", "add", ns)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", hostIf).Run()
		_ = exec.Command("ip", "netns", "del", ns).Run()
	})
	run("ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns)
	run("ip", "addr", "add", "198.51.100.1/24", "dev", hostIf)
	run("ip", "link", "set", hostIf, "up")
	run("ip", "-n", ns, "addr", "add", outsideIP+"/24", "dev", "eth0")
	run("ip", "-n", ns, "link", "set", "eth0", "up")
	run("ip", "-n", ns, "link", "set", "lo", "up")
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0])
	cmd.Env = append(os.Environ(), "COVE_E2E_ROLE=outside")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); !strings.Contains(line, "outside ready") {
		t.Fatalf("outside servers: %q", line)
	}
}

// TestNetworking: environments reach the outside through NAT and resolve
// names, but not each other, the host or metadata addresses; their ports are
// discovered, forwarded over SSH and proxied over HTTP by visibility.
func TestNetworking(t *testing.T) {
	requireTools(t)
	c := newClusterWith(t, "--dns-upstream", outsideIP+":53")
	u := c.user
	reg := images(t)
	outsideNS(t, c.id)
	repo := gitRepo(t, filepath.Join(c.dir, "repo"), map[string]string{"index.html": "hello from the environment\n"})
	for _, name := range []string{"a", "b"} {
		u.must("env", "create", repo, "--name", name, "--image", reg+"/test/busybox:latest", "--wait")
	}
	ipB := field(u.envJSON("b"), "status", "ipAddress")
	if ipB == "" || field(u.envJSON("a"), "status", "ipAddress") == ipB {
		t.Fatalf("addresses: a=%s b=%s", field(u.envJSON("a"), "status", "ipAddress"), ipB)
	}
	sh := func(env, script string) (string, int) {
		out, errOut, code := u.run("ssh", env, "--", script)
		return out + errOut, code
	}

	// (busybox-static's wget crashes in its static name lookup; nc does not.)
	get := func(env, host string, port int) (string, int) {
		return sh(env, fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 %s %d`, host, port))
	}
	// Egress through NAT, and DNS through the runner's relay.
	if out, code := get("a", outsideIP, 8000); code != 0 || !strings.Contains(out, "outside saw 198.51.100.1") {
		t.Fatalf("egress: %d %q", code, out)
	}
	if out, code := sh("a", "nslookup outside.test"); code != 0 || !strings.Contains(out, outsideIP) {
		t.Fatalf("DNS: %d %q", code, out)
	}
	// Root inside may bind privileged ports and ping, as on its own machine.
	if out, code := sh("a", "httpd -p 80 -h /tmp && echo bound"); code != 0 || !strings.Contains(out, "bound") {
		t.Fatalf("bind port 80: %d %q", code, out)
	}
	// ICMP echo sockets for every group (iputils ping uses them; this busybox
	// build's ping only tries raw sockets).
	if out, code := sh("a", "cat /proc/sys/net/ipv4/ping_group_range /proc/sys/net/ipv4/ip_unprivileged_port_start"); code != 0 || strings.Join(strings.Fields(out), " ") != "0 65535 0" {
		t.Fatalf("sysctls inside: %d %q", code, out)
	}

	// Not each other, not the host, not metadata.
	if out, code := sh("b", "cd /workspaces/repo && httpd -p 8080 && echo started"); code != 0 {
		t.Fatalf("httpd in b: %q", out)
	}
	if out, code := get("b", ipB, 8080); code != 0 || !strings.Contains(out, "200 OK") {
		t.Fatalf("control: b reaches its own server: %d %q", code, out)
	}
	if out, code := get("a", ipB, 8080); code == 0 || strings.Contains(out, "200 OK") {
		t.Fatalf("env a reached env b: %q", out)
	}
	hostLn, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostLn.Close()
	go http.Serve(hostLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "host service") }))
	hostPort := hostLn.Addr().(*net.TCPAddr).Port
	gw := strings.TrimSuffix(strings.Split(c.subnet, "/")[0], "0") + "1"
	for _, target := range []string{gw, "198.51.100.1", "169.254.169.254"} {
		if out, code := get("a", target, hostPort); code == 0 || strings.Contains(out, "host service") {
			t.Fatalf("env reached %s:%d: %q", target, hostPort, out)
		}
	}

	// Clones run in the environment's network too: a git daemon on the
	// host, reached through the bridge address, is out of reach.
	daemonURL := gitDaemon(t, filepath.Dir(repo), "0.0.0.0:"+strings.Split(freePort(t), ":")[1], "")
	hostGit := strings.Replace(daemonURL, "0.0.0.0", gw, 1) + "/repo"
	if _, errOut, code := u.run("env", "create", hostGit, "--name", "sneaky", "--image", reg+"/test/busybox:latest", "--wait", "--timeout", "2m"); code == 0 || !strings.Contains(errOut, "git clone") {
		t.Fatalf("clone from a host service: exit %d %q", code, errOut)
	}
	u.must("env", "delete", "sneaky", "--wait")

	// Ports: discovered, forwarded over SSH, proxied by visibility.
	if out, code := sh("a", "cd /workspaces/repo && httpd -p 3000 && echo started"); code != 0 {
		t.Fatalf("httpd in a: %q", out)
	}
	waitFor(t, "port 3000 to be discovered", func() bool {
		return strings.Contains(u.must("ports", "list", "a"), "3000")
	})
	local := freePort(t)
	stop := u.background("port-forward", "a", strings.Split(local, ":")[1]+":3000")
	defer stop()
	waitFor(t, "cove port-forward", func() bool {
		body, code := httpGet("http://"+local+"/", "")
		return code == 200 && strings.Contains(body, "hello from the environment")
	})
	id := field(u.envJSON("a"), "id")
	url := "http://" + c.proxy + "/p/" + id + "/3000/"
	if _, code := httpGet(url, ""); code != 401 {
		t.Fatalf("anonymous request to a private port: %d", code)
	}
	if body, code := httpGet(url, c.token()); code != 200 || !strings.Contains(body, "hello from the environment") {
		t.Fatalf("owner through the proxy: %d %q", code, body)
	}
	u.must("ports", "share", "a", "3000", "--visibility", "public")
	waitFor(t, "public port to open", func() bool {
		body, code := httpGet(url, "")
		return code == 200 && strings.Contains(body, "hello from the environment")
	})
	// By name, a port URL is its owner's only: anonymous requests get the
	// answer a name nobody has gets, even for a public port, and a
	// browser's login redirect carries the name, never the id.
	byName := "http://" + c.proxy + "/p/a/3000/"
	if body, code := httpGet(byName, c.token()); code != 200 || !strings.Contains(body, "hello from the environment") {
		t.Fatalf("owner by name: %d %q", code, body)
	}
	if _, code := httpGet(byName, ""); code != 401 {
		t.Fatalf("anonymous by name: %d", code)
	}
	req, _ := http.NewRequest("GET", byName, nil)
	req.Header.Set("Accept", "text/html")
	resp, err := (&http.Client{Timeout: testutil.MaxWait, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || strings.Contains(fmt.Sprint(resp.Header)+string(body), id) {
		t.Fatalf("browser by name: %d %v: the id must not be disclosed", resp.StatusCode, resp.Header)
	}

	// Signed-in users' requests through the proxy count as activity. The
	// port-forward above is attached and was the last activity shown; the
	// runner reports the activity again once it moved by its report step
	// (30 s), not per request, so the owner keeps using the port until the
	// status names it.
	waitFor(t, "proxy activity in status", func() bool {
		if _, code := httpGet(url, c.token()); code != 200 {
			return false
		}
		j := u.envJSON("a")
		return field(j, "status", "activity", "lastActive") != "" && field(j, "status", "activity", "source") == "port" &&
			strings.Contains(field(j, "status", "activity", "reason"), "port 3000")
	})

	for _, name := range []string{"a", "b"} {
		u.must("env", "delete", name, "--wait")
	}
	c.up.stop()
	if left := networkLeftovers(c.bridge, "cove-e2e-"+c.id); len(left) > 0 {
		t.Fatalf("network left after delete and stop: %v", left)
	}
}

func httpGet(url, token string) (string, int) {
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: testutil.MaxWait}).Do(req)
	if err != nil {
		return err.Error(), 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}
