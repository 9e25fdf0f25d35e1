package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestFeatures: a registry feature referenced in mixed case installs as
// its lower-case self (as the reference CLI resolves it); `cove env get`
// lists it (id as written, version, digest, options); a second
// environment that reuses the cached features layer says so in `cove env
// logs`; a feature that asks for privileged mode is refused with a
// message that names it, what it asked for, the classes that would allow
// it and what to do.
func TestFeatures(t *testing.T) {
	requireTools(t)
	c := newCluster(t)
	u := c.user
	chainA := writeFeature(t, filepath.Join(c.dir, "f", "chain-a"),
		`{"id": "chain-a", "version": "1.2.3", "options": {"greeting": {"type": "string", "default": "hello"}}}`,
		"#!/bin/sh\nset -e\nmkdir -p /usr/local/bin\nprintf '#!/bin/sh\\necho \"%s from chain-a\"\\n' \"$GREETING\" > /usr/local/bin/chain-a\nchmod +x /usr/local/bin/chain-a\necho installed-chain-a\n")
	dind := writeFeature(t, filepath.Join(c.dir, "f", "dind"),
		`{"id": "dind", "version": "2.0.0", "privileged": true}`, "#!/bin/sh\necho installed-dind\n")
	// The registry holds them under lower-case names, as registries must.
	reg := imagesWith(t, map[string]v1.Image{"features/chain-a:1": chainA, "features/dind:1": dind})
	mixed := reg + "/Features/Chain-A:1"

	repo := gitRepo(t, filepath.Join(c.dir, "app"), map[string]string{".devcontainer/devcontainer.json": `{
		"image": "` + reg + `/test/busybox:latest",
		"features": {"` + mixed + `": {"greeting": "yo"}}
	}`})
	u.must("env", "create", repo, "--name", "fa", "--wait", "--timeout", "4m")
	waitFor(t, "the features to be installed", func() bool {
		return field(u.envJSON("fa"), "status", "devcontainer", "phase") == "SUB_PHASE_READY"
	})
	if out, errOut, code := u.run("ssh", "fa", "--", "chain-a"); code != 0 || out != "yo from chain-a\n" {
		t.Fatalf("mixed-case feature not installed: exit %d %q %q\nlogs:\n%s", code, out, errOut, u.must("env", "logs", "fa"))
	}
	get := u.must("env", "get", "fa")
	line := ""
	for _, l := range strings.Split(get, "\n") {
		if strings.HasPrefix(l, "Features:") {
			line = l
		}
	}
	if !strings.Contains(line, mixed+" 1.2.3 sha256:") || !strings.HasSuffix(line, "greeting=yo") {
		t.Fatalf("env get does not list the feature (id as written, version, digest, options):\n%s", get)
	}
	j := u.envJSON("fa")
	if field(j, "status", "features") == "" || !strings.Contains(field(j, "status", "features"), "sha256:") {
		t.Fatalf("status.features: %v", j["status"])
	}

	// A second environment of the same repository reuses the layer: no
	// install.sh runs, and its log says where the features came from.
	u.must("env", "create", repo, "--name", "fb", "--wait", "--timeout", "4m")
	logs := u.must("env", "logs", "fb")
	if strings.Contains(logs, "installed-chain-a") || !strings.Contains(logs, "reused the cached features layer") ||
		!strings.Contains(logs, "nothing was installed for: "+mixed+" 1.2.3") {
		t.Fatalf("env logs of the environment that reused the features layer:\n%s", logs)
	}
	if out, _, code := u.run("ssh", "fb", "--", "chain-a"); code != 0 || out != "yo from chain-a\n" {
		t.Fatalf("reused features: %d %q", code, out)
	}
	if !strings.Contains(u.must("env", "get", "fb"), "Features:    "+mixed+" 1.2.3") {
		t.Fatal("reused features not listed by env get")
	}

	// A feature asking for privileged mode: refused before anything runs,
	// the environment never starts, and the message says why and what to
	// do.
	priv := gitRepo(t, filepath.Join(c.dir, "priv"), map[string]string{".devcontainer/devcontainer.json": `{
		"image": "` + reg + `/test/busybox:latest",
		"features": {"` + reg + `/features/dind:1": {}}
	}`})
	if _, _, code := u.run("env", "create", priv, "--name", "fp", "--wait", "--timeout", "4m"); code == 0 {
		t.Fatal("an environment with a privileged feature started")
	}
	if ph := field(u.envJSON("fp"), "status", "phase"); ph != "ENVIRONMENT_PHASE_STOPPED" {
		t.Errorf("environment with a privileged feature: phase %s, want STOPPED (never started)", ph)
	}
	get = u.must("env", "get", "fp")
	t.Logf("env get of the refused environment:\n%s", get)
	for _, want := range []string{
		"Failure:     .devcontainer/devcontainer.json: cove cannot run this dev container configuration",
		`.devcontainer/devcontainer.json:3:`,
		`features["` + reg + `/features/dind:1"]: feature "` + reg + `/features/dind:1" asks for privileged: true in its devcontainer-feature.json: privileged mode gives the environment every capability`,
		"No class on this runner allows it.",
		`To fix: remove "` + reg + `/features/dind:1" from "features"`,
	} {
		if !strings.Contains(get, want) {
			t.Errorf("env get lacks %q:\n%s", want, get)
		}
	}
	if out, _, _ := u.run("env", "logs", "fp"); strings.Contains(out, "installed-dind") {
		t.Error("the privileged feature's install.sh ran")
	}
	for _, n := range []string{"fa", "fb", "fp"} {
		u.must("env", "delete", n, "--wait")
	}
}
