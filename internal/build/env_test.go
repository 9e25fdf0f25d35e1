package build

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestBuildkitdEnvironmentHasNoSecrets (review REV-8): buildkitd, which
// runs hostile Dockerfiles, does not inherit the runner's environment: a
// secret in it (the S3 secret of a server sharing the process) is not in
// the running buildkitd's /proc/<pid>/environ, while what it needs (PATH
// with runc, a proxy setting) is.
func TestBuildkitdEnvironmentHasNoSecrets(t *testing.T) {
	t.Setenv("COVE_BACKUP_S3_SECRET_ACCESS_KEY", "s3cr3t-value")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "aws-s3cr3t")
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
	// Without a running buildkitd, the environment it would get.
	for _, xdg := range []string{"", "/x/xdg"} {
		env := strings.Join(buildkitdEnv("/opt/runc", xdg), "\n")
		if strings.Contains(env, "s3cr3t") {
			t.Errorf("buildkitd's environment (xdg %q) holds a secret:\n%s", xdg, env)
		}
		if !strings.Contains(env, "PATH=/opt/runc:") || !strings.Contains(env, "HTTPS_PROXY=http://127.0.0.1:3128") {
			t.Errorf("buildkitd's environment (xdg %q) lacks PATH or the proxy:\n%s", xdg, env)
		}
		if xdg != "" && (!strings.Contains(env, "\nHOME=/x/xdg\n") || strings.Count(env, "\nHOME=") != 1) {
			t.Errorf("rootless environment's HOME:\n%s", env)
		}
	}
	// The real one (skips without root, runc or buildkitd).
	b := startBuilder(t)
	pid, err := os.ReadFile(b.pidFile())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strconv.Atoi(strings.TrimSpace(string(pid))); err != nil {
		t.Fatalf("pid file %q", pid)
	}
	environ, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(environ, []byte("s3cr3t")) {
		t.Error("the running buildkitd's environment holds the secret")
	}
	if !bytes.Contains(environ, []byte("PATH=")) {
		t.Errorf("the running buildkitd has no PATH: %q", environ)
	}
}
