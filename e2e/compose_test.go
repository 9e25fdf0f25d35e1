package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
)

// composeFile is an app (the dev service) and a database-like sibling: an
// HTTP server on a named volume that counts its starts, healthy only after
// a delay, and that fetches a page from the app by name.
const composeFile = `
name: shop
services:
  app:
    image: REG/test/busybox:latest
    # Fails (and leaves no file) unless db is already serving.
    command: ["/bin/sh", "-c", "echo app starting; wget -q -O /tmp/db-at-start http://db:8080/count; exec sleep 1000000"]
    environment:
      DB_URL: http://db:8080
    volumes:
      - ../..:/workspaces
    depends_on:
      db:
        condition: service_healthy
  db:
    image: REG/test/busybox:latest
    command:
      - /bin/sh
      - -c
      - |
        echo "db starting as $$(id -u) on $$(hostname)"
        mkdir -p /data/www
        n=$$(cat /data/www/count 2>/dev/null || echo 0)
        echo $$((n+1)) > /data/www/count
        sleep 2
        (while ! wget -q -O /data/www/from-app http://app:9090/hello; do sleep 0.2; done; echo "db reached app") &
        exec httpd -f -p 8080 -h /data/www
    environment:
      - DB_MODE=test
    ports:
      - "8080"
    volumes:
      - dbdata:/data
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/count"]
      interval: 1s
      retries: 60
volumes:
  dbdata:
`

// TestCompose: a dockerComposeFile devcontainer becomes an app container
// and a database-like sibling in one environment: name resolution both
// ways, depends_on with a healthcheck, a feature and lifecycle commands in
// the dev service, a named volume across stop/start and rebuild,
// the sibling's logs, its port reported, one cgroup, and refused keys.
func TestCompose(t *testing.T) {
	requireTools(t)
	c := newCluster(t)
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "shop"), map[string]string{
		"README.md": "shop\n",
		".devcontainer/devcontainer.json": `{"dockerComposeFile": ["compose.yml"], "service": "app",
			"workspaceFolder": "/workspaces/shop", "shutdownAction": "stopCompose",
			"features": {"./stamp": {}},
			"postCreateCommand": "echo created-in-$(hostname) > /tmp/created"}`,
		".devcontainer/stamp/devcontainer-feature.json": `{"id": "stamp", "version": "1.0.0"}`,
		".devcontainer/stamp/install.sh":                "#!/bin/sh\necho stamped > /etc/stamp\n",
		".devcontainer/compose.yml":                     strings.ReplaceAll(composeFile, "REG", reg),
	})
	u.must("env", "create", repo, "--name", "shop", "--wait", "--timeout", "4m")

	// SSH lands in the dev service, with its environment and the
	// repository; it started only once db was healthy.
	out, errOut, code := u.run("ssh", "shop", "--", "pwd; cat README.md; echo $DB_URL; cat /tmp/db-at-start /etc/stamp")
	if code != 0 || out != "/workspaces/shop\nshop\nhttp://db:8080\n1\nstamped\n" {
		t.Fatalf("in the app service: exit %d %q %q\nlogs: %s", code, out, errOut, u.must("env", "logs", "shop"))
	}
	waitFor(t, "postCreateCommand in the dev service", func() bool {
		out, _, _ := u.run("ssh", "shop", "--", "cat /tmp/created")
		return strings.HasPrefix(out, "created-in-")
	})
	// app → db by name, and db → app by name.
	u.must("ssh", "shop", "--", "mkdir -p /tmp/h && echo hi-from-app > /tmp/h/hello && httpd -p 9090 -h /tmp/h")
	for deadline := time.Now().Add(testutil.PatienceUpTo(t, maxWait)); ; time.Sleep(200 * time.Millisecond) {
		if out, _, _ := u.run("ssh", "shop", "--", "wget -q -O- http://db:8080/from-app"); out == "hi-from-app\n" {
			break
		}
		if time.Now().After(deadline) {
			out, errOut, _ := u.run("ssh", "shop", "--", "cat /etc/hosts; wget -q -O- http://app:9090/hello; netstat -ltn")
			t.Fatalf("db did not fetch a page from app by name; in app: %s %s\ndb's logs: %s", out, errOut, u.must("env", "logs", "shop", "--service", "db"))
		}
	}
	// The sibling's output, and its published port reported like any.
	if logs := u.must("env", "logs", "shop", "--service", "db"); !strings.Contains(logs, "db starting as 0 on db") || !strings.Contains(logs, "db reached app") {
		t.Fatalf("db's logs:\n%s", logs)
	}
	if logs := u.must("env", "logs", "shop", "--service", "app"); !strings.Contains(logs, "app starting") {
		t.Fatalf("the dev service's logs:\n%s", logs)
	}
	if _, errOut, code := u.run("env", "logs", "shop", "--service", "nosuch"); code == 0 || !strings.Contains(errOut, `no logs for service "nosuch"`) {
		t.Fatalf("logs of an unknown service: exit %d %q", code, errOut)
	}
	waitFor(t, "db's port reported", func() bool {
		return strings.Contains(u.must("ports", "list", "shop"), "8080")
	})
	j := u.envJSON("shop")
	if !strings.Contains(field(j, "status", "warnings"), "shutdownAction") {
		t.Errorf("warnings: %v", field(j, "status", "warnings"))
	}
	envID := field(j, "id")
	checkOneCgroup(t, c.cgroup, envID)

	// The named volume survives stop and start (db counts its starts); the
	// app again waits for db.
	u.must("env", "stop", "shop", "--wait")
	u.must("env", "start", "shop", "--wait", "--timeout", "2m")
	if out, errOut, code := u.run("ssh", "shop", "--", "wget -q -O- http://db:8080/count; cat /tmp/db-at-start"); code != 0 || out != "2\n2\n" {
		t.Fatalf("after stop/start: exit %d %q %q", code, out, errOut)
	}
	if logs := u.must("env", "logs", "shop", "--service", "db"); strings.Count(logs, "db starting") != 2 {
		t.Fatalf("db's logs after a restart:\n%s", logs)
	}
	// A rebuild discards the services' file systems, not the volume.
	u.must("env", "rebuild", "shop", "--wait", "--timeout", "4m")
	if out, errOut, code := u.run("ssh", "shop", "--", "wget -q -O- http://db:8080/count; cat /tmp/db-at-start"); code != 0 || out != "3\n3\n" {
		t.Fatalf("after rebuild: exit %d %q %q", code, out, errOut)
	}

	// Unsupported keys are refused by name; nothing starts.
	bad := gitRepo(t, filepath.Join(c.dir, "bad"), map[string]string{
		".devcontainer/devcontainer.json": `{"dockerComposeFile": "compose.yml", "service": "app"}`,
		".devcontainer/compose.yml": "services:\n  app:\n    image: " + reg + "/test/busybox:latest\n    network_mode: host\n" +
			"  db:\n    image: " + reg + "/test/busybox:latest\n    privileged: true\n    volumes:\n      - /etc:/host-etc\n",
	})
	_, errOut, code = u.run("env", "create", bad, "--name", "bad", "--wait", "--timeout", "2m")
	for _, want := range []string{"network_mode", "privileged", "/etc"} {
		if code == 0 || !strings.Contains(errOut, want) {
			t.Errorf("unsupported compose keys: exit %d, message lacks %q:\n%s", code, want, errOut)
		}
	}
	// A failing healthcheck fails the start with the service's output.
	sick := gitRepo(t, filepath.Join(c.dir, "sick"), map[string]string{
		".devcontainer/devcontainer.json": `{"dockerComposeFile": "compose.yml", "service": "app"}`,
		".devcontainer/compose.yml": "services:\n  app:\n    image: " + reg + "/test/busybox:latest\n    command: sleep 1000000\n" +
			"    depends_on:\n      db: {condition: service_healthy}\n" +
			"  db:\n    image: " + reg + "/test/busybox:latest\n    command: sh -c 'echo db-is-sick; exec sleep 1000000'\n" +
			"    healthcheck: {test: [\"CMD-SHELL\", \"echo not-ready; exit 1\"], interval: 200ms, retries: 3}\n",
	})
	_, errOut, code = u.run("env", "create", sick, "--name", "sick", "--wait", "--timeout", "2m")
	if code == 0 || !strings.Contains(errOut, "unhealthy") || !strings.Contains(errOut, "not-ready") {
		t.Fatalf("unhealthy dependency: exit %d %q", code, errOut)
	}

	for _, n := range []string{"shop", "bad", "sick"} {
		u.must("env", "delete", n, "--wait")
	}
	if left, _ := hostLeftovers(c.dir, c.cgroup, c.runcRoots[0], c.rangeBase, c.rangeBase+8*65536); len(left) > 0 {
		t.Fatalf("left on the host after delete: %v", left)
	}
}

// checkOneCgroup: the environment's services all live under one cgroup.
func checkOneCgroup(t *testing.T, parent, envID string) {
	t.Helper()
	base := filepath.Join("/sys/fs/cgroup/memory", parent, envID)
	if _, err := os.Stat(base); err != nil {
		base = filepath.Join("/sys/fs/cgroup", parent, envID) // v2
	}
	ents, err := os.ReadDir(base)
	if err != nil {
		t.Fatalf("environment cgroup: %v", err)
	}
	var members []string
	for _, e := range ents {
		if e.IsDir() {
			members = append(members, e.Name())
		}
	}
	if len(members) != 2 || !strings.Contains(strings.Join(members, " "), envID+"-db") {
		t.Fatalf("cgroup %s holds %v, want the app's and db's", base, members)
	}
}
