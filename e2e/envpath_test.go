package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestEnvPath (issue 11): on a Debian image, whose /etc/profile resets
// PATH in login shells, a feature's containerEnv PATH and remoteEnv's PATH
// reach what a user runs with the default userEnvProbe
// (loginInteractiveShell): an interactive `cove ssh` terminal, an
// interactive OpenSSH terminal, `cove ssh NAME -- cmd` and a
// postCreateCommand. remoteEnv is in those, never in PID 1's environment;
// containerEnv is in both.
func TestEnvPath(t *testing.T) {
	requireTools(t)
	c := newCluster(t)
	u := c.user
	reg := images(t)

	feature := `{"id": "envtool", "version": "1.0.0",
		"containerEnv": {"PATH": "/opt/envtool/bin:${PATH}", "ENVTOOL_HOME": "/opt/envtool"}}`
	install := "#!/bin/sh\nset -e\nmkdir -p /opt/envtool/bin /opt/remote/bin\n" +
		"printf '#!/bin/sh\\necho envtool-ok\\n' > /opt/envtool/bin/envtool\n" +
		"printf '#!/bin/sh\\necho remotetool-ok\\n' > /opt/remote/bin/remotetool\n" +
		"chmod 755 /opt/envtool/bin/envtool /opt/remote/bin/remotetool\n"
	config := `{
		"image": "` + reg + `/test/debian:latest",
		"remoteUser": "dev",
		"features": {"./envtool": {}},
		"containerEnv": {"CONTAINER_MARK": "c1", "TOOLS": "${ENVTOOL_HOME}/bin", "KEPT": "${containerEnv:HOME}", "ODD": "${foo:bar}"},
		"remoteEnv": {"REMOTE_MARK": "r1", "PATH": "${containerEnv:PATH}:/opt/remote/bin"},
		"postCreateCommand": "echo \"$(command -v envtool):$(command -v remotetool):$REMOTE_MARK:$CONTAINER_MARK\" > /tmp/postcreate"
	}`
	repo := gitRepo(t, filepath.Join(c.dir, "pathrepo"), map[string]string{
		".devcontainer/devcontainer.json":                 config,
		".devcontainer/envtool/devcontainer-feature.json": feature,
		".devcontainer/envtool/install.sh":                install,
	})
	u.must("env", "create", repo, "--name", "pe", "--wait", "--timeout", "4m")
	waitFor(t, "lifecycle commands", func() bool {
		return field(u.envJSON("pe"), "status", "devcontainer", "phase") == "SUB_PHASE_READY"
	})

	// What every check expects: both tools found, both markers set.
	const want = "/opt/envtool/bin/envtool:/opt/remote/bin/remotetool:r1:c1"
	const probe = `echo "RES""ULT=$(command -v envtool):$(command -v remotetool):$REMOTE_MARK:$CONTAINER_MARK"`
	result := regexp.MustCompile(`RESULT=([^\r\n]*)`)

	// The image's /etc/profile assigned PATH (Debian's reset); the agent
	// turned the assignments into defaults, inside the container.
	if out, errOut, code := u.run("ssh", "pe", "--", `grep -c 'PATH=${PATH:-"/usr/local/sbin' /etc/profile`); code != 0 || out != "1\n" {
		t.Errorf("/etc/profile not patched: exit %d %q %q", code, out, errOut)
	}

	// A lifecycle command.
	if out, errOut, code := u.run("ssh", "pe", "--", "cat /tmp/postcreate"); code != 0 || out != want+"\n" {
		t.Errorf("postCreateCommand saw %q (exit %d, %s), want %q\nlogs: %s", out, code, errOut, want, u.must("env", "logs", "pe"))
	}

	// A session PAM sets up from scratch (su -) starts from the container's
	// environment (/etc/environment) and keeps its PATH (/etc/profile).
	if out, errOut, code := u.run("ssh", "pe", "--", `sudo su - dev -c 'echo "$(command -v envtool):$CONTAINER_MARK"'`); code != 0 || out != "/opt/envtool/bin/envtool:c1\n" {
		t.Errorf("su - dev: %q (exit %d, %s)", out, code, errOut)
	}

	// `cove ssh NAME -- cmd`.
	if out, errOut, code := u.run("ssh", "pe", "--", probe); code != 0 || !strings.Contains(out, "RESULT="+want+"\n") {
		t.Errorf("cove ssh -- cmd: %q (exit %d, %s), want %q", out, code, errOut, want)
	}

	// An interactive login shell on a terminal through `cove ssh`.
	if got := interactive(t, u, exec.Command(u.cove, "ssh", "pe"), probe, result); got != want {
		t.Errorf("interactive cove ssh: %q, want %q", got, want)
	}

	// An interactive login shell through OpenSSH and the gateway.
	u.must("config-ssh", "--ssh-config", u.sshConf)
	if got := interactive(t, u, exec.Command("ssh", "-F", u.sshConf, "-tt", "pe.cove"), probe, result); got != want {
		t.Errorf("interactive OpenSSH: %q, want %q", got, want)
	}

	// PID 1 (the agent, and what the image's entrypoint chain inherits):
	// containerEnv and the feature's PATH, not remoteEnv. Read from the
	// host: inside, PID 1 is not dumpable (its binary is the runner's).
	id := field(u.envJSON("pe"), "id")
	state, err := exec.Command("runc", "--root", c.runcRoots[0], "state", id).Output()
	if err != nil {
		t.Fatalf("runc state %s: %v", id, err)
	}
	var st struct{ Pid int }
	if err := json.Unmarshal(state, &st); err != nil || st.Pid <= 0 {
		t.Fatalf("runc state %s: %v %s", id, err, state)
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	out := strings.ReplaceAll(string(environ), "\x00", "\n")
	pid1 := strings.Split(out, "\n")
	has := func(prefix string) bool {
		for _, kv := range pid1 {
			if strings.HasPrefix(kv, prefix) {
				return true
			}
		}
		return false
	}
	if !has("CONTAINER_MARK=c1") || !has("ENVTOOL_HOME=/opt/envtool") || !has("PATH=/opt/envtool/bin:") {
		t.Errorf("PID 1 lacks containerEnv:\n%s", out)
	}
	// containerEnv's variables: one a feature sets expands; the others
	// stay as written (as the reference CLI leaves them), with warnings.
	if !slices.Contains(pid1, "TOOLS=/opt/envtool/bin") ||
		!slices.Contains(pid1, "KEPT=${containerEnv:HOME}") || !slices.Contains(pid1, "ODD=${foo:bar}") {
		t.Errorf("containerEnv variables:\n%s", out)
	}
	warnings := field(u.envJSON("pe"), "status", "warnings")
	for _, w := range []string{"containerEnv.KEPT: ${containerEnv:HOME} is kept as written", "write ${HOME}", "containerEnv.ODD: ${foo:bar} kept as written"} {
		if !strings.Contains(warnings, w) {
			t.Errorf("status.warnings lack %q: %s", w, warnings)
		}
	}
	if has("REMOTE_MARK=") || strings.Contains(out, "/opt/remote/bin") {
		t.Errorf("remoteEnv leaked into PID 1's environment:\n%s", out)
	}
}

// interactive runs cmd (an SSH client) on a new terminal, types line and
// exit into the remote shell, and returns what re matched in the output
// (its first group; "" if nothing matched). The terminal's input is
// buffered, so nothing waits for a prompt.
func interactive(t *testing.T, e *env, cmd *exec.Cmd, line string, re *regexp.Regexp) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd.Env = append(os.Environ(), "COVE_CONFIG_DIR="+e.cfgDir, "TERM=xterm")
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 250})
	if err != nil {
		t.Fatalf("start %s on a terminal: %v", cmd.Path, err)
	}
	defer ptmx.Close()
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	defer stop()
	if _, err := io.WriteString(ptmx, line+"\rexit\r"); err != nil {
		t.Fatalf("type into the terminal: %v", err)
	}
	var out bytes.Buffer
	_, err = io.Copy(&out, ptmx) // until the client exits: EIO
	if err != nil && !errors.Is(err, syscall.EIO) {
		t.Errorf("read the terminal: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("%s on a terminal: %v (context: %v)\n%s", cmd.Path, err, ctx.Err(), out.String())
	}
	m := re.FindStringSubmatch(out.String())
	if m == nil {
		t.Logf("terminal output:\n%s", out.String())
		return ""
	}
	return m[1]
}
