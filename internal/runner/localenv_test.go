package runner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/devcontainer"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// TestLocalEnvOnlyFromSpec: the runner answers ${localEnv:…} from
// spec.localEnv only — never from its own process environment, even for a
// variable a repository names on purpose — and warns about every variable
// the configuration references that the CLI did not send, saying what it
// resolved to and where it is referenced.
func TestLocalEnvOnlyFromSpec(t *testing.T) {
	t.Setenv("COVE_RUNNER_SECRET", "runner-secret-value")
	repo := t.TempDir()
	p := filepath.Join(repo, ".devcontainer.json")
	must(t, os.WriteFile(p, []byte(`{"image": "x", "containerEnv": {
		"SENT": "${localEnv:COVE_X}",
		"DEFAULTED": "${localEnv:COVE_UNSET:fallback}",
		"SECRET": "[${localEnv:COVE_RUNNER_SECRET}]"}}`), 0o644))
	env := &covev1.Environment{Id: "e1", Spec: &covev1.EnvironmentSpec{LocalEnv: map[string]string{"COVE_X": "from the cli"}}}
	cfg, _, err := devcontainer.Read(repo, "", devcontainer.LoadOptions{LocalEnv: localEnv(env)})
	must(t, err)
	if got := cfg.ContainerEnv; got["SENT"] != "from the cli" || got["DEFAULTED"] != "fallback" || got["SECRET"] != "[]" {
		t.Fatalf("containerEnv %v", got)
	}
	var msgs []string
	for _, w := range unsentLocalEnv(cfg, env) {
		msgs = append(msgs, w.String())
	}
	// (Positions name the file as devcontainer's messages do.)
	wants := []string{
		`.devcontainer.json:3:16: ${localEnv:COVE_UNSET} was not sent by the creating CLI (unset in its shell, or created without a CLI): its default "fallback"`,
		`.devcontainer.json:4:13: ${localEnv:COVE_RUNNER_SECRET} was not sent by the creating CLI (unset in its shell, or created without a CLI): empty`,
	}
	if len(msgs) != len(wants) {
		t.Fatalf("warnings:\n%s", strings.Join(msgs, "\n"))
	}
	for i, w := range wants {
		if !strings.HasSuffix(msgs[i], w) {
			t.Errorf("warning %d: %s\nwant it to end with: %s", i, msgs[i], w)
		}
	}
	// The map given to the loader is a copy: resolution cannot change the
	// spec.
	m := localEnv(env)
	m["COVE_X"] = "changed"
	if env.Spec.LocalEnv["COVE_X"] != "from the cli" {
		t.Error("localEnv shares the spec's map")
	}
	if len(localEnv(&covev1.Environment{})) != 0 || unsentLocalEnv(nil, env) != nil {
		t.Error("no spec or no configuration: expected nothing")
	}
}
