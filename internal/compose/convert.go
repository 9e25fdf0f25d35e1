package compose

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/covedev/cove/internal/usererr"
)

// Compose healthcheck defaults (also Docker's for an image HEALTHCHECK).
const (
	DefaultHealthInterval = 30 * time.Second
	DefaultHealthTimeout  = 30 * time.Second
	DefaultHealthRetries  = 3
)

// convert turns a validated compose project into the model, in start order.
func convert(cp *types.Project, dev, repo, bindRoot string) (*Project, error) {
	order, err := startOrder(cp)
	if err != nil {
		return nil, err
	}
	p := &Project{Name: cp.Name, DevService: dev}
	vols := map[string]bool{}
	for _, name := range order {
		s, err := convertService(cp.Services[name], cp)
		if err != nil {
			return nil, err
		}
		for _, m := range s.Volumes {
			if m.Type == MountVolume && m.Source != "" {
				vols[m.Source] = true
			}
		}
		p.Services = append(p.Services, s)
	}
	p.Volumes = slices.Sorted(maps.Keys(vols))
	return p, nil
}

func convertService(s types.ServiceConfig, cp *types.Project) (Service, error) {
	out := Service{
		Name:       s.Name,
		Image:      s.Image,
		Command:    cloneNil(s.Command),
		Entrypoint: cloneNil(s.Entrypoint),
		WorkingDir: s.WorkingDir,
		User:       s.User,
		Hostname:   s.Hostname,
		CapAdd:     slices.Clone(s.CapAdd),
		CapDrop:    slices.Clone(s.CapDrop),
		Tty:        s.Tty,
		StdinOpen:  s.StdinOpen,
	}
	if len(s.Environment) > 0 {
		out.Environment = map[string]string{}
		for k, v := range s.Environment {
			if v != nil { // unset and not in the environment: left out, like compose
				out.Environment[k] = *v
			}
		}
	}
	if b := s.Build; b != nil {
		out.Build = &Build{Context: b.Context, Dockerfile: b.Dockerfile, Target: b.Target}
		if out.Build.Dockerfile == "" {
			out.Build.Dockerfile = "Dockerfile"
		}
		if len(b.Args) > 0 {
			out.Build.Args = map[string]string{}
			for k, v := range b.Args.Resolve(cp.Environment.Resolve) {
				if v != nil {
					out.Build.Args[k] = *v
				}
			}
		}
	}
	if len(s.DependsOn) > 0 {
		out.DependsOn = map[string]Condition{}
		for dep, d := range s.DependsOn {
			switch d.Condition {
			case "", types.ServiceConditionStarted:
				out.DependsOn[dep] = ConditionStarted
			case types.ServiceConditionHealthy:
				out.DependsOn[dep] = ConditionHealthy
			case types.ServiceConditionCompletedSuccessfully:
				out.DependsOn[dep] = ConditionCompletedSuccessfully
			default:
				return Service{}, usererr.New("docker compose: service %q: depends_on %q: unknown condition %q", s.Name, dep, d.Condition)
			}
		}
	}
	if h := s.HealthCheck; h != nil {
		hc := &Healthcheck{
			Test:     slices.Clone([]string(h.Test)),
			Interval: dur(h.Interval, DefaultHealthInterval),
			Timeout:  dur(h.Timeout, DefaultHealthTimeout),
			Retries:  DefaultHealthRetries,
		}
		hc.StartPeriod = dur(h.StartPeriod, 0)
		if h.Retries != nil {
			hc.Retries = int(*h.Retries)
		}
		if h.Disable {
			hc.Test = []string{"NONE"}
		}
		if len(hc.Test) == 0 {
			// interval/retries only: the image's test with these settings;
			// not representable, keep the image's healthcheck.
			hc = nil
		}
		out.Healthcheck = hc
	}
	for _, v := range s.Volumes {
		m := Mount{Target: v.Target, ReadOnly: v.ReadOnly}
		switch v.Type {
		case types.VolumeTypeVolume:
			m.Type = MountVolume
			m.Source = v.Source
			if vc, ok := cp.Volumes[v.Source]; ok && vc.Name != "" {
				// top-level name: is the volume's real name
				m.Source = vc.Name
			}
		case types.VolumeTypeBind:
			m.Type = MountBind
			src, err := filepath.EvalSymlinks(v.Source)
			if err != nil {
				return Service{}, fmt.Errorf("bind source %s: %w", v.Source, err)
			}
			m.Source = src
		case types.VolumeTypeTmpfs:
			m.Type = MountTmpfs
		}
		out.Volumes = append(out.Volumes, m)
	}
	for _, t := range s.Tmpfs {
		target, _, _ := strings.Cut(t, ":")
		out.Volumes = append(out.Volumes, Mount{Type: MountTmpfs, Target: target})
	}
	ports := map[int]bool{}
	for _, p := range s.Ports {
		if p.Protocol == "" || p.Protocol == "tcp" {
			ports[int(p.Target)] = true
		}
	}
	out.Ports = slices.Sorted(maps.Keys(ports))
	for _, h := range s.ExtraHosts.AsList(":") {
		out.ExtraHosts = append(out.ExtraHosts, h)
	}
	slices.Sort(out.ExtraHosts)
	return out, nil
}

// startOrder sorts services so that each comes after its dependencies
// (ties by name); a cycle is a user error naming it.
func startOrder(cp *types.Project) ([]string, error) {
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[string]int{}
	var order, stack []string
	var visit func(string) error
	visit = func(n string) error {
		switch state[n] {
		case done:
			return nil
		case visiting:
			i := slices.Index(stack, n)
			cycle := append(slices.Clone(stack[i:]), n)
			return usererr.New("docker compose: depends_on cycle: %s", strings.Join(cycle, " -> "))
		}
		state[n] = visiting
		stack = append(stack, n)
		for _, d := range slices.Sorted(maps.Keys(cp.Services[n].DependsOn)) {
			if err := visit(d); err != nil {
				return err
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = done
		order = append(order, n)
		return nil
	}
	for _, n := range slices.Sorted(maps.Keys(cp.Services)) {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func dur(d *types.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return time.Duration(*d)
}

func cloneNil(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string{}, s...)
}
