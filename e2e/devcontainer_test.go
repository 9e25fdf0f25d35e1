package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/testutil/testimage"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// writeFeature writes a Dev Container Feature into dir and packs it.
func writeFeature(t *testing.T, dir, meta, install string) v1.Image {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "devcontainer-feature.json"), []byte(meta), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "install.sh"), []byte(install), 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := testimage.Feature(dir)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestDevcontainer: a repository whose devcontainer.json uses an image from
// the registry, two features (one depending on the other, with options),
// containerEnv/remoteEnv, remoteUser and every lifecycle command form; then
// logs, stop/start, a cached second build, a failing postCreateCommand and
// a rebuild that applies a changed devcontainer.json.
func TestDevcontainer(t *testing.T) {
	requireTools(t)
	c := newCluster(t)
	u := c.user
	greeter := writeFeature(t, filepath.Join(c.dir, "f", "greeter"),
		`{"id": "greeter", "version": "1.0.0", "options": {"greeting": {"type": "string", "default": "hello"}},
		  "containerEnv": {"GREETER_HOME": "/opt/greeter"}, "entrypoint": "/opt/greeter/init.sh"}`,
		"#!/bin/sh\nset -e\nmkdir -p /opt/greeter\nprintf '#!/bin/sh\\ntouch /tmp/greeter-init\\nexec \"$@\"\\n' > /opt/greeter/init.sh\nchmod +x /opt/greeter/init.sh\nprintf '#!/bin/sh\\necho \"%s from greeter\"\\n' \"$GREETING\" > /usr/local/bin/greet\nchmod +x /usr/local/bin/greet\necho installed-greeter\n")
	reg := imagesWith(t, map[string]v1.Image{"features/greeter:1": greeter})
	shout := writeFeature(t, filepath.Join(c.dir, "f", "shout"),
		`{"id": "shout", "version": "1.0.0", "dependsOn": {"`+reg+`/features/greeter:1": {"greeting": "hi"}}}`,
		"#!/bin/sh\nset -e\nprintf '#!/bin/sh\\ngreet | tr a-z A-Z\\n' > /usr/local/bin/shout\nchmod +x /usr/local/bin/shout\n")
	ref, err := name.ParseReference(reg+"/features/shout:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, shout); err != nil {
		t.Fatal(err)
	}

	config := `{
		// every lifecycle form
		"image": "` + reg + `/test/debian:latest",
		"remoteUser": "dev",
		"containerEnv": {"FROM_CONTAINER_ENV": "yes"},
		"remoteEnv": {"FROM_REMOTE_ENV": "remote-${containerEnv:FROM_CONTAINER_ENV}"},
		"mounts": [{"type": "volume", "source": "cache", "target": "/cache"}, "type=tmpfs,target=/scratch"],
		"workspaceMount": "source=${localWorkspaceFolder},target=/src,type=bind",
		"hostRequirements": {"cpus": 1},
		"forwardPorts": [3000],
		"portsAttributes": {"3000": {"label": "web app", "onAutoForward": "notify"}},
		"runArgs": ["--hostname", "devbox", "--env", "RUNARG=1", "--add-host", "db.local:10.9.9.9"],
		"features": {"` + reg + `/features/shout:1": {}},
		"onCreateCommand": "echo oncreate-$(id -un) >> /tmp/order",
		"updateContentCommand": ["sh", "-c", "echo update >> /tmp/order"],
		"postCreateCommand": {"a": "echo a >> /tmp/par", "b": ["sh", "-c", "echo b >> /tmp/par"]},
		"postStartCommand": "echo start-${containerEnv:FROM_CONTAINER_ENV} >> /tmp/starts",
		"postAttachCommand": "echo attached >> /tmp/attach",
		"customizations": {"vscode": {"extensions": ["golang.go"]}},
		"unknownThing": 1,
	}`
	repo := gitRepo(t, filepath.Join(c.dir, "app"), map[string]string{"README.md": "app\n", ".devcontainer/devcontainer.json": config})
	u.must("env", "create", repo, "--name", "dc", "--wait", "--timeout", "4m")
	// RUNNING comes at waitFor (updateContentCommand); the rest goes on.
	waitFor(t, "lifecycle commands", func() bool {
		return field(u.envJSON("dc"), "status", "devcontainer", "phase") == "SUB_PHASE_READY"
	})

	out, errOut, code := u.run("ssh", "dc", "--", "id -un; greet; shout; echo $FROM_CONTAINER_ENV $FROM_REMOTE_ENV $GREETER_HOME; sort /tmp/order; sort /tmp/par; wc -l < /tmp/starts")
	want := "dev\nhi from greeter\nHI FROM GREETER\nyes remote-yes /opt/greeter\noncreate-dev\nupdate\na\nb\n1\n"
	if code != 0 || out != want {
		t.Fatalf("inside the environment: exit %d\n%s\nstderr: %s\nwant:\n%s\nlogs: %s", code, out, errOut, want, u.must("env", "logs", "dc"))
	}
	j := u.envJSON("dc")
	if field(j, "status", "devcontainer", "phase") != "SUB_PHASE_READY" || field(j, "status", "devcontainerPath") != ".devcontainer/devcontainer.json" ||
		!strings.Contains(field(j, "status", "extensions"), "golang.go") || !strings.Contains(field(j, "status", "warnings"), "unknownThing") {
		t.Fatalf("status: %v", j["status"])
	}
	// Volumes are environment-local and survive a rebuild; tmpfs is fresh;
	// the repository also appears at workspaceMount's target.
	if out, errOut, code := u.run("ssh", "dc", "--", "sudo sh -c 'echo kept > /cache/v'; grep -c ' /scratch tmpfs' /proc/mounts; cat /src/README.md"); code != 0 || out != "1\napp\n" {
		t.Fatalf("mounts: %d %q %q", code, out, errOut)
	}
	// postAttachCommand: an interactive `cove ssh` attach runs it; a plain
	// command does not.
	attach := exec.Command(u.cove, "ssh", "dc")
	attach.Env = append(os.Environ(), "COVE_CONFIG_DIR="+u.cfgDir)
	attach.Stdin = strings.NewReader("exit\n")
	if out, err := attach.CombinedOutput(); err != nil {
		t.Fatalf("attach: %v %s", err, out)
	}
	// The feature's entrypoint ran when the environment started.
	waitFor(t, "the feature entrypoint", func() bool {
		_, _, code := u.run("ssh", "dc", "--", "test -e /tmp/greeter-init")
		return code == 0
	})
	if out, _, code := u.run("ssh", "dc", "--", "cat /tmp/starts"); code != 0 || out != "start-yes\n" {
		t.Fatalf("${containerEnv:...} in a lifecycle command: %d %q", code, out)
	}
	if out, _, code := u.run("ssh", "dc", "--", "cat /tmp/attach"); code != 0 || out != "attached\n" {
		t.Fatalf("postAttachCommand: %d %q", code, out)
	}
	// userEnvProbe (the spec's default, loginInteractiveShell): what the
	// user's shell startup files export reaches commands run over SSH.
	u.must("ssh", "dc", "--", "echo 'export FROM_BASHRC=probed' >> ~/.bashrc")
	if out, _, code := u.run("ssh", "dc", "--", "echo $FROM_BASHRC"); code != 0 || out != "probed\n" {
		t.Fatalf("userEnvProbe: %d %q", code, out)
	}
	if out, _, code := u.run("ssh", "dc", "--", "hostname; echo $RUNARG; grep db.local /etc/hosts"); code != 0 || out != "devbox\n1\n10.9.9.9\tdb.local\n" {
		t.Fatalf("runArgs: %d %q", code, out)
	}
	if out := u.must("ports", "list", "dc"); !strings.Contains(out, "3000") || !strings.Contains(out, "web app") || !strings.Contains(out, "not listening") {
		t.Fatalf("forwardPorts not reported:\n%s", out)
	}
	if out := u.must("env", "get", "dc"); !strings.Contains(out, "golang.go") || !strings.Contains(out, "Devcontainer: READY") {
		t.Fatalf("env get:\n%s", out)
	}
	logs := u.must("env", "logs", "dc")
	for _, s := range []string{"installed-greeter", "postCreateCommand", "initializeCommand"} {
		if s == "initializeCommand" {
			continue // none configured
		}
		if !strings.Contains(logs, s) {
			t.Fatalf("logs lack %q:\n%s", s, logs)
		}
	}

	// Stop and start: postStartCommand again, the create commands not.
	u.must("env", "stop", "dc", "--wait")
	u.must("env", "start", "dc", "--wait")
	// RUNNING comes at waitFor; postStartCommand may still be running.
	waitFor(t, "lifecycle commands after the start", func() bool {
		return field(u.envJSON("dc"), "status", "devcontainer", "phase") == "SUB_PHASE_READY"
	})
	if out, _, _ := u.run("ssh", "dc", "--", "wc -l < /tmp/starts; wc -l < /tmp/order"); out != "2\n2\n" {
		t.Fatalf("after restart: %q", out)
	}

	// A second environment with the same configuration reuses the features
	// layer: no install.sh runs.
	u.must("env", "create", repo, "--name", "dc2", "--wait", "--timeout", "4m")
	if out, _, code := u.run("ssh", "dc2", "--", "shout"); code != 0 || out != "HI FROM GREETER\n" {
		t.Fatalf("cached features: %d %q", code, out)
	}
	if logs := u.must("env", "logs", "dc2"); strings.Contains(logs, "installed-greeter") {
		t.Fatalf("features installed again instead of cached:\n%s", logs)
	}

	// A failing postCreateCommand: the environment stays reachable.
	bad := gitRepo(t, filepath.Join(c.dir, "bad"), map[string]string{".devcontainer.json": `{"image": "` + reg + `/test/debian:latest", "postCreateCommand": "echo trying; exit 3"}`})
	u.must("env", "create", bad, "--name", "bad", "--wait", "--timeout", "4m")
	waitFor(t, "the postCreateCommand to fail", func() bool {
		return field(u.envJSON("bad"), "status", "devcontainer", "phase") != "SUB_PHASE_IN_PROGRESS"
	})
	j = u.envJSON("bad")
	if field(j, "status", "devcontainer", "phase") != "SUB_PHASE_FAILED" || !strings.Contains(field(j, "status", "devcontainer", "message"), "postCreateCommand failed with exit code 3") {
		t.Fatalf("failed postCreateCommand: %v", j["status"])
	}
	if out, _, code := u.run("ssh", "bad", "--", "echo still-here"); code != 0 || out != "still-here\n" {
		t.Fatalf("environment with a failed postCreateCommand not reachable: %d %q", code, out)
	}

	// A class smaller than hostRequirements ask: a clear failure.
	big := gitRepo(t, filepath.Join(c.dir, "big"), map[string]string{".devcontainer.json": `{"image": "` + reg + `/test/debian:latest", "hostRequirements": {"memory": "1000tb"}}`})
	if _, errOut, code := u.run("env", "create", big, "--name", "big", "--wait"); code == 0 || !strings.Contains(errOut, "hostRequirements") {
		t.Fatalf("oversized hostRequirements: exit %d %q", code, errOut)
	}
	// (The CLI chose no class for a local source, so nothing was created.)
	if _, _, code := u.run("env", "get", "big"); code == 0 {
		t.Fatal("an environment was created for unmeetable hostRequirements")
	}

	// Rebuild applies a changed devcontainer.json; /workspaces is kept, the
	// rest of the file system is rebuilt.
	edit := `sed -i 's/"FROM_CONTAINER_ENV": "yes"/"FROM_CONTAINER_ENV": "rebuilt"/' /workspaces/app/.devcontainer/devcontainer.json && echo kept > /workspaces/app/mine && sudo touch /usr/local/bin/stray`
	if out, _, code := u.run("ssh", "dc", "--", edit); code != 0 {
		t.Fatalf("edit: %q", out)
	}
	u.must("env", "rebuild", "dc", "--wait", "--timeout", "4m")
	out, _, _ = u.run("ssh", "dc", "--", "echo $FROM_CONTAINER_ENV; cat /workspaces/app/mine; ls /usr/local/bin/stray 2>&1 | grep -c 'No such'; wc -l < /tmp/order; cat /cache/v")
	if out != "rebuilt\nkept\n1\n2\nkept\n" {
		t.Fatalf("after rebuild: %q", out)
	}
	var st struct{ Status struct{ Phase string } }
	_ = json.Unmarshal([]byte(u.must("env", "get", "dc", "-o", "json")), &st)
	if st.Status.Phase != "ENVIRONMENT_PHASE_RUNNING" {
		t.Fatalf("phase after rebuild: %s", st.Status.Phase)
	}
	for _, n := range []string{"dc", "dc2", "bad"} {
		u.must("env", "delete", n, "--wait")
	}
}
