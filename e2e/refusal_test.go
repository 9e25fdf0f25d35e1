package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestRefusalReachesUser: a devcontainer.json cove refuses for several
// reasons (host network, seccomp=unconfined given twice, a retired short
// feature id, the Docker socket) fails `cove env create --wait` and shows
// in `cove env get` with every problem on its own line: file, property
// path, line:column, why and what to do; the problem given twice once,
// with both places. Nothing starts.
func TestRefusalReachesUser(t *testing.T) {
	c := newCluster(t)
	u := c.user
	reg := images(t)
	doc := `{
  "image": "` + reg + `/test/busybox:latest",
  "runArgs": ["--network=host", "--security-opt", "seccomp=unconfined"],
  "securityOpt": ["seccomp=unconfined"],
  "features": {"homebrew": "latest"},
  "mounts": ["source=/var/run/docker.sock,target=/var/run/docker.sock,type=bind"],
  "postCreateCommand": "touch /tmp/started"
}`
	pos := func(needle string, n int) string { // FILE:LINE:COL of the n-th occurrence
		off := -1
		for i := 0; i <= n; i++ {
			j := strings.Index(doc[off+1:], needle)
			if j < 0 {
				t.Fatalf("%q not in the document", needle)
			}
			off += 1 + j
		}
		line := 1 + strings.Count(doc[:off], "\n")
		col := off - strings.LastIndex(doc[:off], "\n")
		return fmt.Sprintf(".devcontainer/devcontainer.json:%d:%d", line, col)
	}
	want := []string{
		".devcontainer/devcontainer.json: cove cannot run this dev container configuration (4 problems):",
		pos(`"--network=host"`, 0) + `: runArgs[0]: "--network=host" asks for the runner host's network`,
		`To fix: remove it; to reach a port of the environment from your machine, list it in "forwardPorts"`,
		pos(`"--security-opt"`, 0) + ": runArgs[1] (also securityOpt[0] at " + pos(`"seccomp=unconfined"`, 1) + `): "seccomp=unconfined" turns off the system-call filter`,
		pos(`"homebrew"`, 0) + `: features["homebrew"]: "homebrew" is a retired short feature id`,
		"https://containers.dev/implementors/features-distribution/",
		pos(`"source=`, 0) + ": mounts[0]: mounting the Docker socket /var/run/docker.sock",
		"no class offers Docker today",
	}
	repo := gitRepo(t, filepath.Join(c.dir, "refused"), map[string]string{".devcontainer/devcontainer.json": doc})

	_, errOut, code := u.run("env", "create", repo, "--name", "refused", "--wait", "--timeout", "3m")
	if code == 0 {
		t.Fatal("the refused configuration was created and waited for successfully")
	}
	for _, w := range want {
		if !strings.Contains(errOut, w) {
			t.Errorf("create --wait output lacks %q:\n%s", w, errOut)
		}
	}
	// The error (progress lines above it may repeat the status) names the
	// problem given twice once.
	_, final, _ := strings.Cut(errOut, "cove: environment refused: ")
	if n := strings.Count(final, "seccomp=unconfined\" turns off"); n != 1 {
		t.Errorf("seccomp=unconfined reported %d times in the error, want once:\n%s", n, errOut)
	}
	get := u.must("env", "get", "refused")
	for _, w := range want {
		if !strings.Contains(get, w) {
			t.Errorf("env get lacks %q:\n%s", w, get)
		}
	}
	// Each problem is a line of its own under Failure:, indented.
	if !strings.Contains(get, "Failure:     "+want[0]+"\n               - "+want[1]) {
		t.Errorf("env get does not show the problems one per line under Failure:\n%s", get)
	}
	if _, _, code := u.run("ssh", "refused", "--", "true"); code == 0 {
		t.Error("the refused environment accepts SSH sessions")
	}
	u.must("env", "delete", "refused", "--wait")
}
