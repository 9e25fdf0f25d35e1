package devcontainer

import (
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/covedev/cove/internal/usererr"
)

// LoadOptions are the inputs of Read and Load besides the repository.
type LoadOptions struct {
	// LocalWorkspaceFolder is ${localWorkspaceFolder}; default repoDir.
	LocalWorkspaceFolder string
	// LocalEnv answers ${localEnv:VAR}. The runner passes the environment's
	// variables, never its own process environment.
	LocalEnv map[string]string
	// DevcontainerID is ${devcontainerId}; cove uses the environment id.
	// Empty leaves the variable as is.
	DevcontainerID string
	// Allow is the runner's policy for privileged settings (Load only).
	Allow Allow
}

// knownProperties are the top-level properties of the spec (including
// legacy ones); anything else is reported as unknown.
var knownProperties = map[string]bool{
	"$schema": true, "name": true, "image": true, "build": true, "dockerFile": true, "context": true,
	"dockerComposeFile": true, "service": true, "runServices": true, "workspaceFolder": true,
	"workspaceMount": true, "appPort": true, "forwardPorts": true, "portsAttributes": true,
	"otherPortsAttributes": true, "containerEnv": true, "remoteEnv": true, "containerUser": true,
	"remoteUser": true, "updateRemoteUserUID": true, "userEnvProbe": true, "overrideCommand": true,
	"init": true, "privileged": true, "capAdd": true, "securityOpt": true, "mounts": true,
	"features": true, "overrideFeatureInstallOrder": true, "customizations": true,
	"hostRequirements": true, "runArgs": true, "shutdownAction": true, "initializeCommand": true,
	"onCreateCommand": true, "updateContentCommand": true, "postCreateCommand": true,
	"postStartCommand": true, "postAttachCommand": true, "waitFor": true, "secrets": true,
	"extensions": true, "settings": true, "devPort": true,
}

// Read finds and reads the devcontainer.json of repoDir (see Find), folds
// legacy properties into their current form, works out the workspace
// folder and substitutes local variables, as the reference CLI's
// read-configuration does. It does not check that cove can run the
// configuration (Load does). It returns nil, nil, nil when the repository
// has no devcontainer.json.
func Read(repoDir, explicit string, opts LoadOptions) (*Config, []Warning, error) {
	p, err := Find(repoDir, explicit)
	if err != nil || p == "" {
		return nil, nil, err
	}
	// Messages name the file relative to the repository: on a runner, the
	// checkout's own path means nothing to the user.
	c, err := parseFile(p, filepath.ToSlash(relTo(repoDir, p)))
	if err != nil {
		return nil, nil, err
	}
	c.Path = p
	c.explicit = explicit != ""
	var warns []Warning
	warn := func(prop, format string, args ...any) {
		warns = append(warns, Warning{Pos: c.At(prop), Property: prop, Message: fmt.Sprintf(format, args...)})
	}
	if foldLegacy(c.Raw) {
		warn("extensions", "legacy top-level extensions/settings/devPort moved to customizations.vscode")
	}
	local := opts.LocalWorkspaceFolder
	if local == "" {
		local, _ = filepath.Abs(repoDir)
	}
	s := &substituter{localWorkspaceFolder: local, env: opts.LocalEnv, devcontainerID: opts.DevcontainerID}
	mountTarget := path.Join("/workspaces", filepath.Base(local))
	ws := Workspace{}
	if _, compose := c.Raw["dockerComposeFile"]; !compose {
		ws.WorkspaceFolder = mountTarget
		if _, ok := c.Raw["workspaceMount"]; !ok {
			ws.WorkspaceMount = "type=bind,source=" + quoteComma(local) + ",target=" + quoteComma(mountTarget)
		}
	}
	if wf, ok := c.Raw["workspaceFolder"].(string); ok && wf != "" {
		ws.WorkspaceFolder = wf
	}
	// As in the reference CLI, workspaceFolder may itself use local variables.
	s.containerWorkspaceFolder = substituteString(ws.WorkspaceFolder, s.replace)
	ws.WorkspaceFolder = s.containerWorkspaceFolder
	c.Raw = substituteValue(c.Raw, s.replace).(map[string]any)
	c.subst = s
	if err := c.decode(); err != nil {
		return nil, nil, err
	}
	if c.WorkspaceFolder != "" {
		ws.WorkspaceFolder = c.WorkspaceFolder
	}
	ws.MountTarget = mountTarget
	if c.WorkspaceMount != nil {
		ws.WorkspaceMount = *c.WorkspaceMount
		m, err := ParseMount(*c.WorkspaceMount)
		if err != nil {
			warn("workspaceMount", "workspaceMount: %v", err)
		}
		if m.Target != "" {
			ws.MountTarget = m.Target
		}
		if m.Source != "" && m.Source != local {
			warn("workspaceMount", "workspaceMount: only the target is honoured; cove mounts the repository's checkout, not %q", m.Source)
		}
	}
	c.Workspace = ws
	warns = append(warns, c.PortWarnings()...)
	warns = append(warns, c.HostRequirementWarnings()...)

	for _, k := range c.keysInOrder() {
		if !knownProperties[k] {
			warn(k, "unknown property %q is ignored", k)
		}
	}
	if c.ShutdownAction != "" {
		warn("shutdownAction", "shutdownAction is ignored: cove stops environments on inactivity or when asked")
	}
	if len(c.AppPort) > 0 {
		warn("appPort", "appPort is deprecated: its ports are forwarded like forwardPorts, not published on the runner")
	}
	if !c.InitializeCommand.IsZero() {
		warn("initializeCommand", "initializeCommand is ignored: it would run on the runner host, not in the environment")
	}
	for _, pr := range c.Run.Ignored {
		warn("runArgs", "runArgs: %s is ignored", pr)
	}
	return c, warns, nil
}

// Load is Read followed by Check: it fails when the configuration names no
// image, needs something cove does not support yet, or asks for what
// opts.Allow does not permit. It returns nil, nil, nil when the repository
// has no devcontainer.json.
func Load(repoDir, explicit string, opts LoadOptions) (*Config, []Warning, error) {
	c, warns, err := Read(repoDir, explicit, opts)
	if err != nil || c == nil {
		return nil, warns, err
	}
	if err := c.Check(opts.Allow); err != nil {
		return nil, warns, err
	}
	return c, warns, nil
}

func (c *Config) keysInOrder() []string {
	var keys []string
	if c.src != nil {
		keys = slices.Clone(c.src.order[""])
	}
	for k := range c.Raw {
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// foldLegacy moves top-level extensions, settings and devPort into
// customizations.vscode as the reference CLI's updateFromOldProperties does.
func foldLegacy(raw map[string]any) bool {
	ext, hasExt := raw["extensions"]
	settings, hasSettings := raw["settings"]
	devPort, hasDevPort := raw["devPort"]
	if !truthy(ext) && !truthy(settings) && !hasDevPort {
		return false
	}
	cust, _ := raw["customizations"].(map[string]any)
	if cust == nil {
		cust = map[string]any{}
		raw["customizations"] = cust
	}
	vscode, _ := cust["vscode"].(map[string]any)
	if vscode == nil {
		vscode = map[string]any{}
		cust["vscode"] = vscode
	}
	if hasExt && truthy(ext) {
		old, _ := vscode["extensions"].([]any)
		list := slices.Clone(old)
		if l, ok := ext.([]any); ok {
			list = append(list, l...)
		} else {
			list = append(list, ext)
		}
		vscode["extensions"] = list
		delete(raw, "extensions")
	}
	if hasSettings && truthy(settings) {
		merged := map[string]any{}
		if m, ok := settings.(map[string]any); ok {
			for k, v := range m {
				merged[k] = v
			}
		}
		if m, ok := vscode["settings"].(map[string]any); ok {
			for k, v := range m {
				merged[k] = v
			}
		}
		vscode["settings"] = merged
		delete(raw, "settings")
	}
	if hasDevPort {
		if _, ok := vscode["devPort"]; !ok {
			vscode["devPort"] = devPort
			delete(raw, "devPort")
		}
	}
	return true
}

// truthy is JavaScript truthiness for decoded JSON.
func truthy(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case string:
		return v != ""
	case float64:
		return v != 0
	}
	return true
}

func quoteComma(s string) string {
	if strings.Contains(s, ",") {
		return `"` + s + `"`
	}
	return s
}

// missingImage is the reference CLI's message for a configuration that
// names neither an image, a Dockerfile nor a Compose file.
func (c *Config) missingImage() error {
	_, hasImage := c.Raw["image"]
	_, hasCompose := c.Raw["dockerComposeFile"]
	if hasImage || hasCompose || c.isDockerfile() {
		return nil
	}
	return usererr.New(`Dev container config (%s) is missing one of "image", "dockerFile" or "dockerComposeFile" properties.`, c.File())
}

func (c *Config) isDockerfile() bool {
	if _, ok := c.Raw["dockerFile"]; ok {
		return true
	}
	_, ok := c.Build["dockerfile"]
	return ok
}
