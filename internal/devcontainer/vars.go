package devcontainer

import (
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// Variables in string values of devcontainer.json (keys are never
// substituted), as the reference CLI resolves them, and what they mean in
// cove, where the environment runs on a runner rather than on the user's
// machine:
//
//   - ${localWorkspaceFolder}: the host path of the repository's checkout on
//     the runner (LoadOptions.LocalWorkspaceFolder, default the repoDir given
//     to Load). cove never bind-mounts it elsewhere, so it is rarely useful.
//   - ${localWorkspaceFolderBasename}: its last element, the repository
//     folder name (as in /workspaces/<name>).
//   - ${containerWorkspaceFolder}, ${containerWorkspaceFolderBasename}: the
//     workspace folder in the container (workspaceFolder, default
//     /workspaces/<name>) and its last element.
//   - ${localEnv:VAR} and ${localEnv:VAR:default} (also ${env:VAR}): VAR from
//     LoadOptions.LocalEnv. The runner passes the environment's own variables
//     (secrets, user settings), never its process environment, so a
//     repository cannot read the runner's secrets. A missing variable is the
//     default or "". As in the reference CLI, only the text up to the next
//     ':' is the default.
//   - ${containerEnv:VAR} and ${containerEnv:VAR:default}: resolved only
//     once the container exists, against its environment, by
//     Merged.ResolveContainerEnv; left as is until then. It is defined for
//     remoteEnv, lifecycle commands and the rest, not for containerEnv
//     itself, where it stays as written (as in the reference CLI).
//   - ${devcontainerId}: a stable id for the environment. The spec derives
//     it from the container's id labels; cove derives it from the
//     environment id (DevcontainerID). Left as is when unknown (as the
//     reference CLI does before a container exists).
//
// Unknown variables (${foo}, ${foo:bar}, a ${localEnv} without a name) are
// left unchanged, as the reference CLI leaves them. Plain ${VAR} and $VAR
// are not devcontainer.json variables: what they mean in containerEnv is
// envconfig's (envconfig.ContainerEnv).
var variableRE = regexp.MustCompile(`\$\{(.*?)\}`)

// EnvRefRE matches a reference to a variable in a containerEnv value as a
// Dockerfile ENV line expands it: ${NAME} or $NAME. The features' install
// script and the container's environment must agree on it.
var EnvRefRE = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*`)

// substituter resolves the local variables of one configuration.
type substituter struct {
	localWorkspaceFolder     string
	containerWorkspaceFolder string
	env                      map[string]string
	devcontainerID           string
}

func (s *substituter) replace(match, name string, args []string) string {
	switch name {
	case "env", "localEnv":
		return lookupEnv(s.env, match, args)
	case "localWorkspaceFolder":
		if s.localWorkspaceFolder != "" {
			return s.localWorkspaceFolder
		}
	case "localWorkspaceFolderBasename":
		if s.localWorkspaceFolder != "" {
			return filepath.Base(s.localWorkspaceFolder)
		}
	case "containerWorkspaceFolder":
		if s.containerWorkspaceFolder != "" {
			return s.containerWorkspaceFolder
		}
	case "containerWorkspaceFolderBasename":
		if s.containerWorkspaceFolder != "" {
			return path.Base(s.containerWorkspaceFolder)
		}
	case "devcontainerId":
		if s.devcontainerID != "" {
			return s.devcontainerID
		}
	}
	return match
}

// lookupEnv implements ${localEnv:VAR[:default]}. Without a variable name
// the reference CLI fails; cove leaves the text as is.
func lookupEnv(env map[string]string, match string, args []string) string {
	if len(args) == 0 {
		return match
	}
	if v, ok := env[args[0]]; ok {
		return v
	}
	if len(args) > 1 {
		return args[1]
	}
	return ""
}

// substituteString replaces every ${name[:arg...]} in v using replace.
func substituteString(v string, replace func(match, name string, args []string) string) string {
	if !strings.Contains(v, "${") {
		return v
	}
	return variableRE.ReplaceAllStringFunc(v, func(m string) string {
		inner := m[2 : len(m)-1]
		parts := strings.Split(inner, ":")
		return replace(m, parts[0], parts[1:])
	})
}

// substituteValue returns a copy of a decoded JSON value with every string
// (not object keys) substituted.
func substituteValue(v any, replace func(match, name string, args []string) string) any {
	switch v := v.(type) {
	case string:
		return substituteString(v, replace)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = substituteValue(e, replace)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = substituteValue(e, replace)
		}
		return out
	}
	return v
}

// containerEnvReplacer resolves ${containerEnv:VAR[:default]}.
func containerEnvReplacer(env map[string]string) func(match, name string, args []string) string {
	return func(match, name string, args []string) string {
		if name != "containerEnv" {
			return match
		}
		return lookupEnv(env, match, args)
	}
}
