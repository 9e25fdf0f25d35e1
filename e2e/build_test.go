package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/build"
)

// TestDockerfile: a devcontainer.json that builds its image from a
// Dockerfile (args, a target stage, a base image from "the internet"), a
// second environment served from BuildKit's cache, and RUN steps that try
// to reach the host fail with their Dockerfile line.
func TestDockerfile(t *testing.T) {
	requireTools(t)
	if _, err := os.Stat(build.DefaultBuildkitd); err != nil {
		t.Skipf("needs buildkitd at %s (scripts/build-buildkit.sh; make test builds it)", build.DefaultBuildkitd)
	}
	// The base image is named by a host name only the runner's DNS relay
	// (forwarding to the outside namespace) resolves.
	c := newClusterWith(t, "--build-insecure-registry", "outside.test:5000", "--dns-upstream", outsideIP+":53")
	u := c.user
	outsideNS(t, c.id)
	base := "outside.test:5000/test/busybox:latest"
	repo := gitRepo(t, filepath.Join(c.dir, "app"), map[string]string{
		"README.md":                       "readme\n",
		".devcontainer/devcontainer.json": `{"build": {"dockerfile": "Dockerfile", "context": "..", "args": {"GREETING": "hej"}, "target": "dev"}}`,
		".devcontainer/Dockerfile": "FROM " + base + " AS base\nARG GREETING=hello\nRUN echo \"$GREETING\" > /greeting\n" +
			"FROM base AS dev\nCOPY README.md /readme-copy\nRUN echo dev > /stage\n" +
			"FROM base AS other\nRUN echo other > /stage\n",
	})
	_, progress, code := u.run("env", "create", repo, "--name", "built", "--wait", "--timeout", "5m")
	if code != 0 || !strings.Contains(progress, "building: [dev 2/2] RUN echo dev > /stage") {
		t.Fatalf("create with a Dockerfile: exit %d; the CLI should show the build's steps:\n%s", code, progress)
	}
	if out, _, code := u.run("ssh", "built", "--", "cat /greeting /stage /readme-copy"); code != 0 || out != "hej\ndev\nreadme\n" {
		t.Fatalf("built image: %d %q", code, out)
	}
	if logs := u.must("env", "logs", "built"); !strings.Contains(logs, "Building .devcontainer/Dockerfile") {
		t.Fatalf("build output not in the logs:\n%s", logs)
	}
	// Same Dockerfile, context and args: every step comes from the cache.
	u.must("env", "create", repo, "--name", "built2", "--wait", "--timeout", "5m")
	if logs := u.must("env", "logs", "built2"); strings.Count(logs, "CACHED") < 3 {
		t.Fatalf("second build not served from the cache:\n%s", logs)
	}

	// buildkitd (and so every RUN step) is not host root: it runs as the
	// root of a user namespace mapped to an unprivileged range.
	if uid := buildkitdUID(t, c.dir); uid == "0" || uid == "" {
		t.Fatalf("buildkitd runs as host uid %q", uid)
	}

	// A repository cannot point the build context at host files.
	sneaky := gitRepo(t, filepath.Join(c.dir, "symlinked"), map[string]string{
		".devcontainer.json": `{"build": {"dockerfile": "Dockerfile", "context": "ctx"}}`,
		"Dockerfile":         "FROM " + base + "\nCOPY . /host\n",
	})
	if err := os.Symlink("/", filepath.Join(sneaky, "ctx")); err != nil {
		t.Fatal(err)
	}
	gitCommitAll(t, sneaky)
	if _, errOut, code := u.run("env", "create", sneaky, "--name", "symlinked", "--wait", "--timeout", "2m"); code == 0 || !strings.Contains(errOut, "outside the repository") {
		t.Fatalf("symlinked build context: exit %d %q", code, errOut)
	}
	u.must("env", "delete", "symlinked", "--wait")

	// RUN steps cannot reach the host: neither a service on the bridge
	// address nor one on the host's other addresses.
	hostLn, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostLn.Close()
	go http.Serve(hostLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "host") }))
	port := hostLn.Addr().(*net.TCPAddr).Port
	gw := strings.TrimSuffix(strings.Split(c.subnet, "/")[0], "0") + "1"
	for i, target := range []string{gw, "198.51.100.1"} {
		name := fmt.Sprintf("sneaky%d", i)
		bad := gitRepo(t, filepath.Join(c.dir, name), map[string]string{
			".devcontainer.json": `{"build": {"dockerfile": "Dockerfile"}}`,
			"Dockerfile":         fmt.Sprintf("FROM %s\nRUN echo probing\nRUN nc -w 3 %s %d </dev/null\n", base, target, port),
		})
		_, errOut, code := u.run("env", "create", bad, "--name", name, "--wait", "--timeout", "5m")
		if code == 0 || !strings.Contains(errOut, "Dockerfile:3") {
			t.Fatalf("RUN reaching %s:%d: exit %d %q", target, port, code, errOut)
		}
		u.must("env", "delete", name, "--wait")
	}
	// Compose: the dev service and a sibling built from Dockerfiles (the
	// usual app + db template).
	composed := gitRepo(t, filepath.Join(c.dir, "composed"), map[string]string{
		".devcontainer/devcontainer.json": `{"dockerComposeFile": "compose.yml", "service": "app", "workspaceFolder": "/workspaces/composed"}`,
		".devcontainer/compose.yml": "services:\n  app:\n    build:\n      context: .\n      dockerfile: Dockerfile\n      args: {GREETING: composed}\n      target: dev\n" +
			"    volumes:\n      - ../..:/workspaces:cached\n    command: sleep infinity\n    depends_on: [db]\n" +
			"  db:\n    build: {context: ., dockerfile: db.Dockerfile}\n    command: [\"httpd\", \"-f\", \"-p\", \"5432\", \"-h\", \"/www\"]\n",
		".devcontainer/Dockerfile":    "FROM " + base + " AS base\nARG GREETING=hello\nRUN echo \"$GREETING\" > /greeting\nFROM base AS dev\n",
		".devcontainer/db.Dockerfile": "FROM " + base + "\nRUN mkdir /www && echo db-built > /www/index.html\n",
	})
	u.must("env", "create", composed, "--name", "composed", "--wait", "--timeout", "5m")
	waitFor(t, "the built db service", func() bool {
		out, _, _ := u.run("ssh", "composed", "--", "cat /greeting; wget -q -O- http://db:5432/")
		return out == "composed\ndb-built\n"
	})
	for _, n := range []string{"built", "built2", "composed"} {
		u.must("env", "delete", n, "--wait")
	}
}

// buildkitdUID is the host uid of the buildkitd whose command line names dir.
func buildkitdUID(t *testing.T, dir string) string {
	t.Helper()
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), "buildkitd") || !strings.Contains(string(cmdline), dir) ||
			strings.Contains(string(cmdline), "internal-with-resolv") {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", p.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
				return strings.Fields(rest)[0]
			}
		}
	}
	return ""
}
