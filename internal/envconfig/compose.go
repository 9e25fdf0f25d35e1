package envconfig

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/covedev/cove/internal/compose"
	"github.com/covedev/cove/internal/usererr"
)

// ComposeInput is a Docker Compose configuration to resolve.
type ComposeInput struct {
	// Project is the loaded project (compose.LoadWithOptions); Warnings
	// are the load's.
	Project  *compose.Project
	Warnings []compose.Warning
	// Images are the sibling services' images by service name, pulled or
	// built (the dev service's is Input.Image).
	Images map[string]Image
}

// resolveCompose resolves every sibling service of in and returns the
// project's state with the dev service's image, its settings applied.
func resolveCompose(in *ComposeInput, devImage Image) (*ComposeState, Image, error) {
	proj := in.Project
	cs := &ComposeState{Project: proj.Name, DevService: proj.DevService}
	var dev Image
	for _, s := range proj.Services {
		cs.Order = append(cs.Order, s.Name)
		if s.Name == proj.DevService {
			cs.DevDependsOn = s.DependsOn
			dev = WithService(devImage, s)
			continue
		}
		img, ok := in.Images[s.Name]
		if !ok {
			return nil, Image{}, fmt.Errorf("envconfig: no image given for service %q", s.Name)
		}
		svc, err := NewServiceState(s, img)
		if err != nil {
			return nil, Image{}, err
		}
		cs.Services = append(cs.Services, svc)
	}
	return cs, dev, nil
}

// NewServiceState is sibling service s, with its image img, ready to
// start: the service's environment over the image's, its user, working
// directory and command line (Docker's rules: ResolveCommand), its
// hostname (the service name by default), dependencies, health check
// (the compose file's, else the image's) and volumes. A service whose name
// cannot name a directory, or which has nothing to run, is refused.
func NewServiceState(s compose.Service, img Image) (ServiceState, error) {
	if !ValidServiceName(s.Name) {
		// compose.Load refuses these already; the name becomes a directory
		// of the runner's, so check again where it does.
		return ServiceState{}, usererr.New("docker compose: invalid service name %q", s.Name)
	}
	svc := ServiceState{Name: s.Name, Image: img.Ref, ImageDigest: img.Digest, Layers: img.Layers,
		Env:  MergeEnv(img.Config.Env, s.Environment),
		User: cmp.Or(s.User, img.Config.User), WorkingDir: cmp.Or(s.WorkingDir, img.Config.WorkingDir),
		Command:  ResolveCommand(img.Config.Entrypoint, img.Config.Cmd, s.Entrypoint, s.Command),
		Hostname: cmp.Or(s.Hostname, s.Name), DependsOn: s.DependsOn,
		Healthcheck: s.Healthcheck, Mounts: ServiceMounts(s)}
	if svc.Healthcheck == nil {
		svc.Healthcheck = ImageHealthcheckOf(img.Config.Healthcheck)
	}
	if len(svc.Command) == 0 {
		return ServiceState{}, usererr.New("docker compose: service %q has no command: its image %s has no ENTRYPOINT or CMD and the compose file sets neither", s.Name, img.Ref)
	}
	return svc, nil
}

// WithService is img with service s's settings applied to its config, as
// docker compose applies them to the container: its environment over the
// image's, its user and working directory, and its command line (as the
// image's CMD, with no ENTRYPOINT), so the devcontainer.json merge sees
// them as the container's.
func WithService(img Image, s compose.Service) Image {
	out := img
	c := &out.Config
	c.Env = MergeEnv(c.Env, s.Environment)
	c.User = cmp.Or(s.User, c.User)
	c.WorkingDir = cmp.Or(s.WorkingDir, c.WorkingDir)
	cmd := ResolveCommand(c.Entrypoint, c.Cmd, s.Entrypoint, s.Command)
	c.Entrypoint, c.Cmd = nil, cmd
	return out
}

// ApplyComposeDev adds what the dev service's compose settings ask of the
// dev container to dc: the load's warnings, its volumes, hostname (unless
// runArgs set one), extra hosts, and every service's published ports as
// forwarded ports (sorted).
func ApplyComposeDev(dc *DevcontainerState, proj *compose.Project, warns []compose.Warning) {
	for _, w := range warns {
		dc.Warnings = append(dc.Warnings, w.String())
	}
	dev, _ := proj.Service(proj.DevService)
	dc.Mounts = append(dc.Mounts, ServiceMounts(*dev)...)
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

// ServiceMounts are a service's volumes as environment mounts. Anonymous
// volumes are per service and target.
func ServiceMounts(s compose.Service) []ConfigMount {
	var out []ConfigMount
	for _, m := range s.Volumes {
		dm := ConfigMount{Type: string(m.Type), Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly}
		if m.Type == compose.MountVolume && m.Source == "" {
			dm.Source = "anon-" + s.Name + "-" + strings.ReplaceAll(strings.Trim(m.Target, "/"), "/", "-")
		}
		out = append(out, dm)
	}
	return out
}

// ResolveCommand is the container's command line as Docker makes it: a
// compose entrypoint replaces the image's and drops its CMD; a compose
// command replaces the CMD. nil means "not set"; an empty slice clears.
func ResolveCommand(imgEntrypoint, imgCmd, entrypoint, command []string) []string {
	ep, cmd := imgEntrypoint, imgCmd
	if entrypoint != nil {
		ep, cmd = entrypoint, nil
	}
	if command != nil {
		cmd = command
	}
	return append(slices.Clone(ep), cmd...)
}

// MergeEnv sets add's variables over base (KEY=VALUE): base's other
// variables in their order, then add's sorted by name, values as given
// (compose has interpolated them already).
func MergeEnv(base []string, add map[string]string) []string {
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

// ImageHealthcheckOf is an image's HEALTHCHECK as a compose health check,
// with Docker's defaults; nil when the image has none.
func ImageHealthcheckOf(h *ImageHealthcheck) *compose.Healthcheck {
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

// ValidServiceName reports whether name can name a service's directory
// (envs/<id>/svc/<name>) and container id: one plain path element of at
// most 63 letters, digits, '_', '.' and '-', not starting with '.', '-'
// or '_', so that no service's directory (or the run directory it lets
// the service write) can be another's.
func ValidServiceName(name string) bool {
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

// HealthExec is the command one health check runs: Args (CMD form, no
// shell) or Shell (CMD-SHELL form).
type HealthExec struct {
	Args  []string
	Shell string
}

// HealthCommand is what a check of service's health check hc runs. A
// missing or disabled (NONE) check, an unknown form and an empty test are
// user errors naming the service.
func HealthCommand(service string, hc *compose.Healthcheck) (HealthExec, error) {
	if hc == nil || len(hc.Test) == 0 || hc.Test[0] == "NONE" {
		return HealthExec{}, usererr.New("service %s has no healthcheck", service)
	}
	var e HealthExec
	switch hc.Test[0] {
	case "CMD":
		e.Args = hc.Test[1:]
	case "CMD-SHELL":
		e.Shell = strings.Join(hc.Test[1:], " ")
	default:
		return HealthExec{}, usererr.New("service %s: healthcheck test must start with CMD, CMD-SHELL or NONE, not %q", service, hc.Test[0])
	}
	if len(e.Args) == 0 && e.Shell == "" {
		return HealthExec{}, usererr.New("service %s: empty healthcheck test", service)
	}
	return e, nil
}
