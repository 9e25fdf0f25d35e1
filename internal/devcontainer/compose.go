package devcontainer

import (
	"github.com/covedev/cove/internal/usererr"
)

// ComposeConfig is a Docker Compose configuration: dockerComposeFile,
// service and runServices. Files are relative to the folder of
// devcontainer.json, as in the spec; the runner loads them with
// internal/compose.
type ComposeConfig struct {
	Files       []string
	Service     string
	RunServices []string
}

// Compose returns the Compose configuration, or nil for an image or
// Dockerfile configuration.
func (c *Config) Compose() (*ComposeConfig, error) {
	raw, ok := c.Raw["dockerComposeFile"]
	if !ok {
		return nil, nil
	}
	cc := &ComposeConfig{Service: c.Service, RunServices: c.RunServices}
	switch v := raw.(type) {
	case string:
		cc.Files = []string{v}
	case []any:
		for _, f := range v {
			s, ok := f.(string)
			if !ok {
				return nil, usererr.New("%s: dockerComposeFile must be a file name or a list of file names", c.At("dockerComposeFile"))
			}
			cc.Files = append(cc.Files, s)
		}
	default:
		return nil, usererr.New("%s: dockerComposeFile must be a file name or a list of file names", c.At("dockerComposeFile"))
	}
	if len(cc.Files) == 0 {
		return nil, usererr.New("%s: dockerComposeFile names no file", c.At("dockerComposeFile"))
	}
	if cc.Service == "" {
		return nil, usererr.New(`%s: "service" is required with "dockerComposeFile" (the service SSH lands in)`, c.At("dockerComposeFile"))
	}
	return cc, nil
}
