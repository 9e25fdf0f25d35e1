package runner

import (
	"fmt"

	"github.com/covedev/cove/internal/devcontainer"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// localEnv answers devcontainer.json's ${localEnv:VAR}: the values the
// creating CLI sent from the user's shell (spec.localEnv, fixed at create).
// The runner's own process environment is never consulted: a repository
// must not read the runner's secrets.
func localEnv(env *covev1.Environment) map[string]string {
	out := map[string]string{}
	for k, v := range env.GetSpec().GetLocalEnv() {
		out[k] = v
	}
	return out
}

// unsentLocalEnv warns about each ${localEnv:VAR} cfg references that the
// creating CLI did not send (unset in the user's shell, or the environment
// was created without a CLI: through the API or for a git URL whose
// configuration the CLI could not read), saying what it resolved to.
func unsentLocalEnv(cfg *devcontainer.Config, env *covev1.Environment) []devcontainer.Warning {
	sent := env.GetSpec().GetLocalEnv()
	var out []devcontainer.Warning
	for _, r := range cfg.LocalEnvReferences() {
		if _, ok := sent[r.Name]; ok {
			continue
		}
		got := "empty"
		if r.HasDefault {
			got = fmt.Sprintf("its default %q", r.Default)
		}
		out = append(out, devcontainer.Warning{Pos: r.Pos, Property: r.Property,
			Message: fmt.Sprintf("${localEnv:%s} was not sent by the creating CLI (unset in its shell, or created without a CLI): %s", r.Name, got)})
	}
	return out
}
