package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/agent/agentproto"
)

// TestRemoteEnv: users' sessions get remoteEnv from the runner's file on
// top of the user env probe, even when the shell's startup files reset a
// variable (as Debian's /etc/profile resets PATH); what the client sends
// wins over it; the runner's own sessions (another login name) do not get
// it, and the agent's own environment never has it.
func TestRemoteEnv(t *testing.T) {
	e := newTestEnv(t)
	// "me"'s home is e.dir: a login sh reads ~/.profile, which resets PATH.
	must(t, os.WriteFile(filepath.Join(e.dir, ".profile"), []byte("PATH=/usr/bin:/bin\nexport PROBED=login\n"), 0o644))
	remote := filepath.Join(e.dir, "remote-env.json")
	must(t, os.WriteFile(remote, []byte(`["REMOTE_MARK=r1","PATH=/remote/bin:/usr/bin:/bin","PROBED=remote"]`), 0o600))
	e.cfg.RemoteEnvPath = remote
	e.cfg.UserEnvProbe = agentproto.ProbeLoginShell
	e.start(t)
	cmd := `echo "$REMOTE_MARK|$PATH|$PROBED|$FROM_IMAGE"`

	out, stderr, code := run(t, e.client(t), cmd)
	if want := "r1|/remote/bin:/usr/bin:/bin|remote|yes\n"; code != 0 || out != want {
		t.Errorf("user session: %q (stderr %q, exit %d), want %q: remoteEnv must win over the probe", out, stderr, code, want)
	}
	out, _, code = runEnv(t, e.client(t), map[string]string{"REMOTE_MARK": "client"}, cmd)
	if want := "client|/remote/bin:/usr/bin:/bin|remote|yes\n"; code != 0 || out != want {
		t.Errorf("client's variable: %q, want %q", out, want)
	}
	// The runner's lifecycle sessions log in as the remote user and send
	// remoteEnv themselves.
	out, _, code = runEnv(t, e.clientAs(t, "me"), map[string]string{agentproto.EnvUserEnvProbe: agentproto.ProbeLoginShell}, cmd)
	if want := "|/usr/bin:/bin|login|yes\n"; code != 0 || out != want {
		t.Errorf("runner's session: %q, want %q", out, want)
	}
	if getEnv(e.cfg.Env, "REMOTE_MARK") != "" || getEnv(os.Environ(), "REMOTE_MARK") != "" {
		t.Error("remoteEnv reached the agent's own environment")
	}

	// A corrupt file: sessions still start, without it, and the log says why.
	must(t, os.WriteFile(remote, []byte(`["=nameless"]`), 0o600))
	out, _, code = run(t, e.client(t), cmd)
	if want := "|/usr/bin:/bin|login|yes\n"; code != 0 || out != want {
		t.Errorf("corrupt remoteEnv: %q (exit %d), want %q", out, code, want)
	}
	if !strings.Contains(e.logs.String(), "is not NAME=VALUE") {
		t.Errorf("corrupt remoteEnv not logged:\n%s", e.logs.String())
	}
	// No file: none.
	must(t, os.Remove(remote))
	if out, _, code = run(t, e.client(t), cmd); code != 0 || out != "|/usr/bin:/bin|login|yes\n" {
		t.Errorf("no remoteEnv file: %q (exit %d)", out, code)
	}
}

func TestLoadRemoteEnv(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "r.json")
	if env, err := loadRemoteEnv(""); env != nil || err != nil {
		t.Errorf("no path: %q, %v", env, err)
	}
	if env, err := loadRemoteEnv(p); env != nil || err != nil {
		t.Errorf("missing file: %q, %v", env, err)
	}
	for body, want := range map[string]string{`{`: "parse remoteEnv", `["A"]`: `"A" is not NAME=VALUE`, `[1]`: "parse remoteEnv"} {
		must(t, os.WriteFile(p, []byte(body), 0o600))
		if _, err := loadRemoteEnv(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
	must(t, os.WriteFile(p, []byte(`["A=1","B=x=y","C="]`), 0o600))
	if env, err := loadRemoteEnv(p); err != nil || strings.Join(env, " ") != "A=1 B=x=y C=" {
		t.Errorf("valid file: %q, %v", env, err)
	}
}
