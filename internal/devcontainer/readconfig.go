package devcontainer

import "maps"

// ReadConfigurationOutput is the object the reference CLI's
// `devcontainer read-configuration` prints, for c (from Read) and, with
// --include-merged-configuration, m (from Merge). Differences: cove does
// not look for the enclosing git repository (the repository root is the
// workspace folder) and prints no featuresConfiguration.
func ReadConfigurationOutput(c *Config, m *Merged) map[string]any {
	out := map[string]any{"configuration": c.referenceJSON()}
	ws := map[string]any{}
	if c.Workspace.WorkspaceFolder != "" {
		ws["workspaceFolder"] = c.Workspace.WorkspaceFolder
	}
	if c.Workspace.WorkspaceMount != "" {
		ws["workspaceMount"] = c.Workspace.WorkspaceMount
	}
	out["workspace"] = ws
	if m != nil {
		merged := maps.Clone(m.Raw)
		merged["configFilePath"] = c.configFilePath()
		out["mergedConfiguration"] = merged
	}
	return out
}

// referenceJSON is Raw plus configFilePath, as the reference CLI prints it.
func (c *Config) referenceJSON() map[string]any {
	out := maps.Clone(c.Raw)
	out["configFilePath"] = c.configFilePath()
	return out
}

// configFilePath is the reference CLI's serialised URI of the file.
func (c *Config) configFilePath() map[string]any {
	scheme := "vscode-fileHost" // discovered
	if c.explicit {
		scheme = "file"
	}
	return map[string]any{"$mid": 1, "fsPath": c.Path, "path": c.Path, "scheme": scheme}
}
