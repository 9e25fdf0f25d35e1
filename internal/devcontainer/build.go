package devcontainer

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/covedev/cove/internal/usererr"
)

// DockerBuild is a Dockerfile configuration: `build` (or the legacy
// `dockerFile`/`context`). Paths are relative to the folder of
// devcontainer.json, as in the spec.
type DockerBuild struct {
	Dockerfile string
	Context    string // default "."
	Args       map[string]string
	Target     string
	CacheFrom  []string
	Labels     map[string]string // from options --label
}

// DockerBuild returns the Dockerfile configuration, or nil for an image
// configuration. options are limited to a safe subset (--build-arg,
// --label, --target); others are refused by name.
func (c *Config) DockerBuild() (*DockerBuild, error) {
	if !c.isDockerfile() {
		return nil, nil
	}
	b := &DockerBuild{Context: ".", Args: map[string]string{}, Labels: map[string]string{}}
	str := func(v any) string { s, _ := v.(string); return s }
	if c.Build != nil {
		b.Dockerfile = str(c.Build["dockerfile"])
		if ctx := str(c.Build["context"]); ctx != "" {
			b.Context = ctx
		}
		b.Target = str(c.Build["target"])
		if args, ok := c.Build["args"].(map[string]any); ok {
			for k, v := range args {
				b.Args[k] = fmt.Sprint(v)
			}
		}
		switch cf := c.Build["cacheFrom"].(type) {
		case string:
			b.CacheFrom = []string{cf}
		case []any:
			for _, v := range cf {
				b.CacheFrom = append(b.CacheFrom, str(v))
			}
		}
		if opts, ok := c.Build["options"].([]any); ok {
			var bad []string
			for i := 0; i < len(opts); i++ {
				o := str(opts[i])
				name, val, hasVal := strings.Cut(o, "=")
				if !hasVal && i+1 < len(opts) && (name == "--build-arg" || name == "--label" || name == "--target") {
					i++
					val = str(opts[i])
				}
				switch name {
				case "--build-arg":
					k, v, _ := strings.Cut(val, "=")
					b.Args[k] = v
				case "--label":
					k, v, _ := strings.Cut(val, "=")
					b.Labels[k] = v
				case "--target":
					b.Target = val
				default:
					bad = append(bad, o)
				}
			}
			if len(bad) > 0 {
				sort.Strings(bad)
				return nil, usererr.New("%s: build.options: %s not allowed (cove accepts --build-arg, --label and --target)", c.At("build.options"), strings.Join(bad, ", "))
			}
		}
	}
	if c.DockerFile != "" && b.Dockerfile == "" {
		b.Dockerfile = c.DockerFile
		if c.Context != "" {
			b.Context = c.Context
		}
	}
	if b.Dockerfile == "" {
		return nil, usererr.New("%s: build.dockerfile is required", c.At("build"))
	}
	for _, p := range []string{b.Dockerfile, b.Context} {
		if path.IsAbs(p) {
			return nil, usererr.New("%s: build paths must be relative to devcontainer.json's folder, not %q", c.At("build"), p)
		}
	}
	return b, nil
}
