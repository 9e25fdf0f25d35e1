package devcontainer

import (
	"fmt"
	"path"
	"strings"
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
	var rs Refusals
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
			for i := 0; i < len(opts); i++ {
				o, at := str(opts[i]), c.Loc(fmt.Sprintf("build.options[%d]", i))
				name, val, hasVal := strings.Cut(o, "=")
				if !hasVal && i+1 < len(opts) && (name == "--build-arg" || name == "--label" || name == "--target" || name == "--network") {
					i++
					val = str(opts[i])
					o += " " + val
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
				case "--network":
					rs.Add(Refusal{Key: "build:" + o, Locations: []Location{at},
						Reason: fmt.Sprintf("%q: a build always uses the runner's build network, never the host's or another one", o),
						Remedy: "remove it"})
				default:
					rs.Add(Refusal{Key: "build:" + name, Locations: []Location{at},
						Reason: fmt.Sprintf("docker build option %q is not supported", o),
						Remedy: `remove it; build.options may hold --build-arg, --label and --target (or use "build.args" and "build.target")`})
				}
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
		rs.Add(Refusal{Locations: []Location{c.Loc("build")}, Reason: "build.dockerfile is required",
			Remedy: `add "dockerfile": "Dockerfile", the Dockerfile's path relative to devcontainer.json's folder`})
	}
	for prop, p := range map[string]string{"build.dockerfile": b.Dockerfile, "build.context": b.Context} {
		if path.IsAbs(p) {
			if _, legacy := c.Raw["dockerFile"]; legacy {
				prop = map[string]string{"build.dockerfile": "dockerFile", "build.context": "context"}[prop]
			}
			rs.Add(Refusal{Locations: []Location{c.Loc(prop)}, Reason: fmt.Sprintf("%q is an absolute path: build paths are relative to devcontainer.json's folder and stay in the repository", p),
				Remedy: "write it relative to devcontainer.json's folder"})
		}
	}
	if err := rs.Err(c.File()); err != nil {
		return nil, err
	}
	return b, nil
}
