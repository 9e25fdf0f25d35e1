package envconfig

import (
	"strings"
	"testing"

	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/usererr"
)

// TestFeatureRefusals: (CheckFeatures, which Resolve runs before the
// merge; e2e TestFeatures goes through the runner) a repository's feature that asks for privileged
// mode, an extra capability, an unconfined security profile, the runner's
// Docker socket or a host path is refused before anything starts, with a
// message located at the feature's entry in devcontainer.json (for a
// dependency, the entry that pulls it in) that names the feature as
// written, what it asks for, why, which classes would allow it and what
// to do; what the runner allows passes.
func TestFeatureRefusals(t *testing.T) {
	repo := checkout(t, map[string]string{".devcontainer/devcontainer.json": "{\"image\": \"x\",\n  \"features\": {\n" +
		"    \"ghcr.io/acme/features/DinD:2\": {},\n    \"ghcr.io/acme/features/tools:1\": {}}}"})
	cfg, _ := loadConfigIn(t, repo, false)
	dind := Feature{ID: "ghcr.io/acme/features/DinD:2", Metadata: []byte(`{"id":"dind","version":"2.0.0","privileged":true,` +
		`"securityOpt":["seccomp=unconfined","no-new-privileges"],"mounts":[{"type":"volume","source":"dind-var","target":"/var/lib/docker"}]}`)}
	// sock is a dependency of dep, itself a dependency of tools.
	sock := Feature{ID: "ghcr.io/acme/features/sock:1", RequiredBy: []string{"ghcr.io/acme/features/dep:1"},
		Metadata: []byte(`{"id":"sock","version":"1.0.0","capAdd":["sys_admin","CHOWN"],"mounts":["source=/var/run/docker.sock,target=/var/run/docker-host.sock,type=bind"]}`)}
	dep := Feature{ID: "ghcr.io/acme/features/dep:1", RequiredBy: []string{"ghcr.io/acme/features/tools:1"}, Metadata: []byte(`{"id":"dep","version":"1.0.0"}`)}
	tools := Feature{ID: "ghcr.io/acme/features/tools:1", Metadata: []byte(`{"id":"tools","version":"1.0.0","capAdd":["CAP_CHOWN"],"init":true,"entrypoint":"/t.sh"}`)}
	all := []Feature{dind, sock, dep, tools}
	err := CheckFeatures(cfg, all, Allow(false, false), []*Class{smallClass})
	msg, ok := usererr.Message(err)
	if !ok {
		t.Fatalf("CheckFeatures = %v, want a user error", err)
	}
	t.Log(msg)
	for _, want := range []string{
		".devcontainer/devcontainer.json: cove cannot run this dev container configuration (4 problems):",
		`.devcontainer/devcontainer.json:3:5: features["ghcr.io/acme/features/DinD:2"]: feature "ghcr.io/acme/features/DinD:2" asks for privileged: true in its devcontainer-feature.json: privileged mode gives the environment every capability`,
		`asks for securityOpt: "seccomp=unconfined" in its devcontainer-feature.json`,
		"No class on this runner allows it. To fix: " + `remove "ghcr.io/acme/features/DinD:2" from "features" (or use a feature that does without it), or ask the runner's operator for a class that allows privileged mode.`,
		`.devcontainer/devcontainer.json:4:5: features["ghcr.io/acme/features/tools:1"]: feature "ghcr.io/acme/features/sock:1", which "ghcr.io/acme/features/tools:1" depends on, asks for capAdd: SYS_ADMIN in its devcontainer-feature.json: a capability beyond those this runner grants`,
		"asks for a bind mount of /var/run/docker.sock at /var/run/docker-host.sock (mounts[0]) in its devcontainer-feature.json: the runner's Docker socket is root on the runner",
		`To fix: remove "ghcr.io/acme/features/tools:1" from "features"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q", want)
		}
	}
	for _, not := range []string{"no-new-privileges", "capAdd: SYS_ADMIN, CHOWN", "capAdd: CHOWN", "dind-var", `feature "ghcr.io/acme/features/tools:1" asks`, `"ghcr.io/acme/features/dep:1" asks`} {
		if strings.Contains(msg, not) {
			t.Errorf("message refuses what the runner allows: %q", not)
		}
	}
	if rs := devcontainer.Refused(err); len(rs) != 4 {
		t.Errorf("%d refusals, want 4 (one per problem)", len(rs))
	}

	// A class that allows privileged mode is named, and offered as the fix;
	// the Docker socket stays refused whatever the class.
	priv := &Class{ID: "trusted", Allow: devcontainer.Allow{Privileged: true}}
	err = CheckFeatures(cfg, all, Allow(false, false), []*Class{smallClass, priv})
	msg, _ = usererr.Message(err)
	if want := `Class "trusted" allows it. To fix: create the environment with ` + "`--class trusted`" + `, or remove "ghcr.io/acme/features/DinD:2"`; !strings.Contains(msg, want) {
		t.Errorf("message lacks %q:\n%s", want, msg)
	}
	if i := strings.Index(msg, "docker.sock"); i < 0 || !strings.Contains(msg[i:], "No class on this runner allows it.") {
		t.Errorf("the Docker socket offered by a class:\n%s", msg)
	}

	// The environment's own class allowing it: nothing refused.
	if err := CheckFeatures(cfg, []Feature{dind, tools}, devcontainer.Allow{Privileged: true, Capabilities: Capabilities}, nil); err != nil {
		t.Errorf("allowed features refused: %v", err)
	}
}
