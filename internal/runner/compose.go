package runner

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/covedev/cove/internal/compose"
	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// composeState is what the runner resolved from a Docker Compose
// configuration. The dev service is the environment's main container (the
// one SSH lands in); every other service runs beside it as a sibling
// container in the same network namespace, user namespace range and
// cgroup.
type composeState struct {
	Project    string `json:"project"`
	DevService string `json:"devService"`
	// Order is every service's name, the dev service's included, in start
	// order (each after what it depends on).
	Order []string `json:"order"`
	// DevDependsOn is what the dev service waits for before it starts.
	DevDependsOn map[string]compose.Condition `json:"devDependsOn,omitempty"`
	// Services are the siblings, in start order.
	Services []svcState `json:"services,omitempty"`
}

// svcState is one sibling service, ready to start.
type svcState struct {
	Name        string   `json:"name"`
	Image       string   `json:"image"`
	ImageDigest string   `json:"imageDigest"`
	Layers      []string `json:"layers"`
	Env         []string `json:"env,omitempty"`
	User        string   `json:"user,omitempty"`
	// Command is the resolved ENTRYPOINT + CMD.
	Command    []string                     `json:"command,omitempty"`
	WorkingDir string                       `json:"workingDir,omitempty"`
	Hostname   string                       `json:"hostname,omitempty"`
	Mounts     []dcMount                    `json:"mounts,omitempty"`
	DependsOn  map[string]compose.Condition `json:"dependsOn,omitempty"`
	// Healthcheck is the compose file's, else the image's; nil if neither.
	Healthcheck *compose.Healthcheck `json:"healthcheck,omitempty"`
}

// service returns the sibling named name.
func (c *composeState) service(name string) (*svcState, bool) {
	for i := range c.Services {
		if c.Services[i].Name == name {
			return &c.Services[i], true
		}
	}
	return nil, false
}

// loadCompose loads the compose files of cfg (cc is its Compose
// configuration) and prepares every sibling service's image. It returns
// the project and the dev service's image with the service's settings
// (environment, user, working_dir, entrypoint, command) applied to its
// config, so that the devcontainer.json merge sees them as the
// container's.
func (im *imageStep) loadCompose(ctx context.Context, note func(string), env *covev1.Environment, lay envdir.Layout, st *envState, cfg *devcontainer.Config, cc *devcontainer.ComposeConfig) (*compose.Project, []compose.Warning, *image.Image, error) {
	if !im.net.n.Namespaced() {
		return nil, nil, nil, usererr.New("dockerComposeFile: this runner has no environment networking configured, which Docker Compose services need to reach each other")
	}
	repoDir := filepath.Join(lay.Workspace(), st.Content.RepoName)
	proj, warns, err := compose.LoadWithOptions(ctx, compose.Options{
		RepoDir: repoDir, ConfigDir: filepath.Dir(cfg.Path), Files: cc.Files,
		DevService: cc.Service, RunServices: cc.RunServices,
		Env:         map[string]string{}, // never the runner's environment
		AllowedCaps: im.allow(env.GetSpec().GetClassId()).Capabilities,
		// "..:/workspaces" and the like: any directory of the checkout.
		BindRoot: lay.Workspace(),
	})
	if err != nil {
		return nil, nil, nil, err
	}
	cs := &composeState{Project: proj.Name, DevService: proj.DevService}
	var devImg *image.Image
	for _, s := range proj.Services {
		cs.Order = append(cs.Order, s.Name)
		img, err := im.serviceImage(ctx, note, env.GetMetadata().GetOrganizationId(), lay, st, s)
		if err != nil {
			return nil, nil, nil, err
		}
		if s.Name == proj.DevService {
			cs.DevDependsOn = s.DependsOn
			devImg = withService(img, s)
			continue
		}
		if !validServiceName(s.Name) {
			// compose.Load refuses these already; the name becomes a
			// directory of the runner's, so check again where it does.
			return nil, nil, nil, usererr.New("docker compose: invalid service name %q", s.Name)
		}
		svc := svcState{Name: s.Name, Image: img.Ref, ImageDigest: img.Digest, Layers: img.Layers,
			Env:  mergeEnv(img.Config.Env, s.Environment),
			User: cmp.Or(s.User, img.Config.User), WorkingDir: cmp.Or(s.WorkingDir, img.Config.WorkingDir),
			Command:  resolveCommand(img.Config.Entrypoint, img.Config.Cmd, s.Entrypoint, s.Command),
			Hostname: cmp.Or(s.Hostname, s.Name), DependsOn: s.DependsOn,
			Healthcheck: s.Healthcheck, Mounts: serviceMounts(s)}
		if svc.Healthcheck == nil {
			svc.Healthcheck = imageHealthcheck(img.Config)
		}
		if len(svc.Command) == 0 {
			return nil, nil, nil, usererr.New("docker compose: service %q has no command: its image %s has no ENTRYPOINT or CMD and the compose file sets neither", s.Name, img.Ref)
		}
		cs.Services = append(cs.Services, svc)
	}
	st.Image.Compose = cs
	return proj, warns, devImg, nil
}

// serviceImage pulls or builds a service's image.
func (im *imageStep) serviceImage(ctx context.Context, note func(string), org string, lay envdir.Layout, st *envState, s compose.Service) (*image.Image, error) {
	if b := s.Build; b != nil {
		note(fmt.Sprintf("building service %s", s.Name))
		img, err := im.buildImage(ctx, org, lay, st, buildSpec{Context: b.Context, Dockerfile: filepath.Join(b.Context, b.Dockerfile), Target: b.Target, Args: b.Args}, note)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", s.Name, err)
		}
		img.Ref = "built for service " + s.Name
		return img, nil
	}
	if s.Image == "" {
		return nil, usererr.New("docker compose: service %q has neither image nor build", s.Name)
	}
	note(fmt.Sprintf("pulling %s for service %s", s.Image, s.Name))
	img, err := im.images.Pull(ctx, s.Image)
	if err != nil {
		if msg, ok := usererr.Message(err); ok {
			return nil, usererr.Wrap(err, "service %s: %s", s.Name, msg)
		}
		return nil, fmt.Errorf("service %s: %w", s.Name, err)
	}
	return img, nil
}

// withService is img with the service's settings applied to its config,
// as docker compose applies them to the container.
func withService(img *image.Image, s compose.Service) *image.Image {
	out := *img
	c := &out.Config
	c.Env = mergeEnv(c.Env, s.Environment)
	c.User = cmp.Or(s.User, c.User)
	c.WorkingDir = cmp.Or(s.WorkingDir, c.WorkingDir)
	cmd := resolveCommand(c.Entrypoint, c.Cmd, s.Entrypoint, s.Command)
	c.Entrypoint, c.Cmd = nil, cmd
	return &out
}

// applyComposeDev adds what the dev service's compose settings ask of the
// dev container to dc: its volumes, hostname, extra hosts, and every
// service's published ports as forwarded ports.
func applyComposeDev(dc *dcState, proj *compose.Project, warns []compose.Warning) {
	for _, w := range warns {
		dc.Warnings = append(dc.Warnings, w.String())
	}
	dev, _ := proj.Service(proj.DevService)
	dc.Mounts = append(dc.Mounts, serviceMounts(*dev)...)
	if dc.Hostname == "" {
		dc.Hostname = dev.Hostname
	}
	dc.AddHosts = append(dc.AddHosts, dev.ExtraHosts...)
	for _, s := range proj.Services {
		for _, p := range s.Ports {
			if !slices.Contains(dc.Ports.Forward, p) {
				dc.Ports.Forward = append(dc.Ports.Forward, p)
			}
		}
	}
	slices.Sort(dc.Ports.Forward)
}

// serviceMounts are a service's volumes as environment mounts. Anonymous
// volumes are per service and target.
func serviceMounts(s compose.Service) []dcMount {
	var out []dcMount
	for _, m := range s.Volumes {
		dm := dcMount{Type: string(m.Type), Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly}
		if m.Type == compose.MountVolume && m.Source == "" {
			dm.Source = "anon-" + s.Name + "-" + strings.ReplaceAll(strings.Trim(m.Target, "/"), "/", "-")
		}
		out = append(out, dm)
	}
	return out
}

// resolveCommand is the container's command line as Docker makes it: a
// compose entrypoint replaces the image's and drops its CMD; a compose
// command replaces the CMD.
func resolveCommand(imgEntrypoint, imgCmd, entrypoint, command []string) []string {
	ep, cmd := imgEntrypoint, imgCmd
	if entrypoint != nil {
		ep, cmd = entrypoint, nil
	}
	if command != nil {
		cmd = command
	}
	return append(slices.Clone(ep), cmd...)
}

// mergeEnv sets add's variables over base (KEY=VALUE), values as given
// (compose has interpolated them already).
func mergeEnv(base []string, add map[string]string) []string {
	out := make([]string, 0, len(base)+len(add))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := add[k]; !ok {
			out = append(out, kv)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(add)) {
		out = append(out, k+"="+add[k])
	}
	return out
}

// imageHealthcheck is the image's HEALTHCHECK with Docker's defaults.
func imageHealthcheck(c image.Config) *compose.Healthcheck {
	h := c.Healthcheck
	if h == nil || len(h.Test) == 0 {
		return nil
	}
	hc := &compose.Healthcheck{Test: slices.Clone(h.Test), Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
	if hc.Interval == 0 {
		hc.Interval = compose.DefaultHealthInterval
	}
	if hc.Timeout == 0 {
		hc.Timeout = compose.DefaultHealthTimeout
	}
	if hc.Retries == 0 {
		hc.Retries = compose.DefaultHealthRetries
	}
	return hc
}

// validServiceName reports whether name can name a service's directory
// (envs/<id>/svc/<name>): one plain path element, never "." or "..", so
// that no service's directory (or the run directory it lets the service
// write) can be another's.
func validServiceName(name string) bool {
	if name == "" || name == "." || name == ".." || len(name) > 63 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return name[0] != '.' && name[0] != '-' && name[0] != '_'
}
