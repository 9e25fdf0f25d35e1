package compose

import (
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/covedev/cove/internal/usererr"
)

// validator collects every refused key of a project, so that one message
// names them all, and the warnings for keys that are ignored.
type validator struct {
	repo, bindRoot string
	// files are the compose files, relative to the repository (messages
	// name them: compose-go gives no positions).
	files           []string
	allowedCaps     map[string]bool
	allowPrivileged bool
	// declared are the top-level volumes.
	declared types.Volumes

	problems []string
	warnings []Warning
}

func (v *validator) refuse(service, key, format string, args ...any) {
	v.refuseFix(service, key, "", format, args...)
}

// refuseFix refuses a key of a service ("" for a top-level key), saying
// what to do instead (remedy, "" when removing it is all there is). The
// key is named by its path in the file: services.<service>.<key>.
func (v *validator) refuseFix(service, key, remedy, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if remedy != "" {
		msg += ". To fix: " + remedy
	}
	switch {
	case service == "":
	case strings.Contains(service, ".") || !serviceName.MatchString(service):
		key = fmt.Sprintf("services[%q].%s", service, key)
	default:
		key = "services." + service + "." + key
	}
	v.problems = append(v.problems, fmt.Sprintf("%s: %s", key, msg))
}

// granted lists the capabilities the validator allows, for messages.
func (v *validator) granted() string {
	if len(v.allowedCaps) == 0 {
		return "none"
	}
	var caps []string
	for c := range v.allowedCaps {
		caps = append(caps, strings.TrimPrefix(c, "CAP_"))
	}
	slices.Sort(caps)
	return strings.Join(caps, ", ")
}

const (
	noDocker    = "remove it; Docker inside an environment needs a class that offers it, and no class offers Docker today"
	ownNS       = "remove it: every service has its own namespace, and the host's would break the environment's isolation"
	useForward  = `remove it; services share the environment's network and reach each other by service name; to reach a port from your machine, list it in devcontainer.json "forwardPorts"`
	askOperator = "remove it, or ask the runner's operator for a class that grants it"
)

func (v *validator) warn(service, key, msg string) {
	v.warnings = append(v.warnings, Warning{Service: service, Key: key, Message: msg})
}

func (v *validator) err() error {
	if len(v.problems) == 0 {
		return nil
	}
	slices.Sort(v.problems)
	v.problems = slices.Compact(v.problems)
	where := "docker compose"
	if len(v.files) > 0 {
		where = strings.Join(v.files, ", ") + " (docker compose)"
	}
	return usererr.New("%s: unsupported settings, cove cannot run these services:\n  - %s", where, strings.Join(v.problems, "\n  - "))
}

func (v *validator) project(p *types.Project) {
	v.declared = p.Volumes
	for _, name := range slices.Sorted(maps.Keys(p.Volumes)) {
		vol := p.Volumes[name]
		if vol.External {
			v.refuse("", "volumes."+name+".external", "external volumes are not supported; volumes belong to the environment")
		}
		if vol.Driver != "" && vol.Driver != "local" {
			v.refuse("", "volumes."+name+".driver", "volume driver %q is not supported", vol.Driver)
		}
		if len(vol.DriverOpts) > 0 {
			v.refuse("", "volumes."+name+".driver_opts", "volume driver options are not supported")
		}
	}
	for _, name := range slices.Sorted(maps.Keys(p.Networks)) {
		n := p.Networks[name]
		if n.External {
			v.refuse("", "networks."+name+".external", "external networks are not supported")
		}
		if name != "default" {
			v.warn("", "networks."+name, "ignored: all services of the environment share one network and reach each other by service name")
		}
	}
	if len(p.Secrets) > 0 {
		v.refuse("", "secrets", "not supported; use the environment's secrets or env_file")
	}
	if len(p.Configs) > 0 {
		v.refuse("", "configs", "not supported; bind a file of the repository instead")
	}
	if len(p.Models) > 0 {
		v.refuse("", "models", "not supported")
	}
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		v.service(p.Services[name])
	}
	slices.SortStableFunc(v.warnings, func(a, b Warning) int {
		return strings.Compare(a.Service+"\x00"+a.Key, b.Service+"\x00"+b.Key)
	})
}

// serviceName is what a service may be called: it names directories on
// the runner (one per service), so never ".", "..", a path, or anything a
// hosts file or a shell would read otherwise.
var serviceName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// hostname is a DNS name (labels of letters, digits and '-').
var hostname = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$`)

func (v *validator) service(s types.ServiceConfig) {
	n := s.Name
	if !serviceName.MatchString(n) {
		v.refuse(n, "name", "service names are letters, digits, '_', '.' and '-', starting with a letter or digit")
	}
	if s.Hostname != "" && (len(s.Hostname) > 253 || !hostname.MatchString(s.Hostname)) {
		v.refuse(n, "hostname", "%q is not a valid host name", s.Hostname)
	}
	switch m := s.NetworkMode; {
	case m == "" || m == "default" || m == "bridge":
	case m == "none":
		v.warn(n, "network_mode", `"none" is ignored: the service joins the environment's network`)
	case strings.HasPrefix(m, "service:"):
		// The devcontainer template's "service:db": every service shares
		// the environment's network namespace already.
	default:
		v.refuseFix(n, "network_mode", useForward, "%q is not supported (only the environment's own network)", m)
	}
	if s.Net != "" {
		v.refuseFix(n, "net", useForward, "not supported")
	}
	if s.Pid != "" {
		v.refuseFix(n, "pid", ownNS, "%q is not supported (each service has its own pid namespace)", s.Pid)
	}
	if s.Ipc != "" && s.Ipc != "private" && s.Ipc != "shareable" {
		v.refuseFix(n, "ipc", ownNS, "%q is not supported", s.Ipc)
	}
	if s.Uts != "" {
		v.refuseFix(n, "uts", ownNS, "%q is not supported", s.Uts)
	}
	if s.Cgroup == "host" {
		v.refuseFix(n, "cgroup", ownNS, `"host" is not supported`)
	}
	if s.Privileged && !v.allowPrivileged {
		v.refuseFix(n, "privileged", fmt.Sprintf("remove it and add only the capabilities the service needs with cap_add (this runner grants: %s)", v.granted()),
			"privileged mode gives the service every capability and the host's devices, and no class of this runner allows it")
	}
	for _, c := range s.CapAdd {
		if !v.allowedCaps[normCap(c)] {
			v.refuseFix(n, "cap_add", askOperator, "%s is not granted by this runner's classes (they grant: %s)", c, v.granted())
		}
	}
	if len(s.Devices) > 0 {
		v.refuseFix(n, "devices", "remove it; host devices are never passed to an environment", "host devices are not supported")
	}
	if len(s.DeviceCgroupRules) > 0 {
		v.refuse(n, "device_cgroup_rules", "not supported")
	}
	if len(s.Gpus) > 0 {
		v.refuse(n, "gpus", "not supported")
	}
	for _, o := range s.SecurityOpt {
		if strings.Contains(o, "unconfined") || strings.HasPrefix(o, "label=disable") || strings.HasPrefix(o, "label:disable") {
			v.refuseFix(n, "security_opt", "remove it", "%q is not allowed: it loosens the service's confinement, which only privileged classes allow, and this runner has none", o)
		} else {
			v.warn(n, "security_opt", fmt.Sprintf("%q is ignored", o))
		}
	}
	if s.UserNSMode != "" {
		v.refuseFix(n, "userns_mode", "remove it", "not supported (every environment has its own user namespace)")
	}
	if s.CgroupParent != "" {
		v.refuse(n, "cgroup_parent", "not supported (services run in the environment's cgroup)")
	}
	if s.UseAPISocket {
		v.refuseFix(n, "use_api_socket", noDocker, "there is no Docker daemon")
	}
	if s.Runtime != "" {
		v.refuse(n, "runtime", "not supported")
	}
	if s.Isolation != "" && s.Isolation != "default" {
		v.refuse(n, "isolation", "not supported")
	}
	if len(s.VolumesFrom) > 0 {
		v.refuse(n, "volumes_from", "not supported; use a named volume")
	}
	if s.Provider != nil {
		v.refuse(n, "provider", "not supported")
	}
	if len(s.Secrets) > 0 {
		v.refuse(n, "secrets", "not supported")
	}
	if len(s.Configs) > 0 {
		v.refuse(n, "configs", "not supported")
	}
	if len(s.Models) > 0 {
		v.refuse(n, "models", "not supported")
	}
	if len(s.PreStart) > 0 || len(s.PostStart) > 0 || len(s.PreStop) > 0 {
		v.refuse(n, "pre_start/post_start/pre_stop", "lifecycle hooks are not supported; use devcontainer.json lifecycle commands")
	}
	if s.Scale != nil && *s.Scale > 1 {
		v.refuse(n, "scale", "more than one replica is not supported")
	}
	if s.Deploy != nil && s.Deploy.Replicas != nil && *s.Deploy.Replicas > 1 {
		v.refuse(n, "deploy.replicas", "more than one replica is not supported")
	}
	if s.Image == "" && s.Build == nil {
		v.refuse(n, "image", "a service needs an image or a build")
	}
	v.build(s)
	v.volumes(s)
	for _, p := range s.Ports {
		if p.Protocol != "" && p.Protocol != "tcp" {
			v.warn(n, "ports", fmt.Sprintf("%d/%s: only tcp ports are reported", p.Target, p.Protocol))
		}
	}
	v.ignored(s)
}

func (v *validator) build(s types.ServiceConfig) {
	b, n := s.Build, s.Name
	if b == nil {
		return
	}
	if b.Context == "" || strings.Contains(b.Context, "://") || strings.HasPrefix(b.Context, "git@") {
		v.refuse(n, "build.context", "%q: only a directory of the repository is supported", b.Context)
	} else if _, err := confine(v.repo, b.Context); err != nil {
		v.refuse(n, "build.context", "%s", relMsg(v.repo, err))
	}
	if b.Dockerfile != "" && filepath.IsAbs(b.Dockerfile) {
		v.refuse(n, "build.dockerfile", "must be relative to the build context")
	}
	if b.DockerfileInline != "" {
		v.refuse(n, "build.dockerfile_inline", "not supported; commit the Dockerfile")
	}
	if b.Network != "" && b.Network != "default" {
		v.refuse(n, "build.network", "%q is not supported", b.Network)
	}
	if b.Privileged {
		v.refuse(n, "build.privileged", "not supported")
	}
	if len(b.Entitlements) > 0 {
		v.refuse(n, "build.entitlements", "not supported")
	}
	if len(b.SSH) > 0 {
		v.refuse(n, "build.ssh", "not supported")
	}
	if len(b.Secrets) > 0 {
		v.refuse(n, "build.secrets", "not supported")
	}
	if len(b.AdditionalContexts) > 0 {
		v.refuse(n, "build.additional_contexts", "not supported")
	}
	if len(b.CacheFrom) > 0 || len(b.CacheTo) > 0 {
		v.warn(n, "build.cache_from/cache_to", "ignored: builds are cached by the runner")
	}
	if len(b.Platforms) > 0 {
		v.warn(n, "build.platforms", "ignored: images are built for the runner's platform")
	}
}

func (v *validator) volumes(s types.ServiceConfig) {
	n := s.Name
	for _, m := range s.Volumes {
		if !path.IsAbs(m.Target) {
			v.refuse(n, "volumes", "target %q is not an absolute path in the container (short syntax: [SOURCE:]TARGET[:MODE], e.g. \"data:/var/lib/db\")", m.Target)
			continue
		}
		switch m.Type {
		case types.VolumeTypeVolume:
			if _, ok := v.declared[m.Source]; m.Source != "" && !ok {
				v.refuse(n, "volumes", "named volume %q is not declared: add it under the top-level \"volumes:\" key (as docker compose requires)", m.Source)
			}
		case types.VolumeTypeTmpfs:
		case types.VolumeTypeBind:
			if strings.HasSuffix(m.Source, "docker.sock") {
				v.refuseFix(n, "volumes", noDocker, "%s: mounting the Docker socket would give the environment root on the runner host, and there is no Docker daemon to bind", m.Source)
				continue
			}
			p, err := filepath.EvalSymlinks(m.Source)
			if err != nil {
				// docker compose creates missing bind sources; cove does
				// not create host paths, so it must exist.
				v.refuseFix(n, "volumes", "create it in the repository, or use a named volume", "bind source %s does not exist (cove does not create host paths)", relPath(v.repo, m.Source))
				continue
			}
			if !within(v.bindRoot, p) {
				v.refuseFix(n, "volumes", "bind a directory of the repository, or use a named volume for data", "bind source %s is outside the repository: an environment sees no files of the runner host", m.Source)
			}
		default:
			v.refuse(n, "volumes", "%s mounts are not supported", m.Type)
		}
	}
	if s.VolumeDriver != "" {
		v.refuse(n, "volume_driver", "not supported")
	}
}

// ignored warns about keys cove accepts but does not act on.
func (v *validator) ignored(s types.ServiceConfig) {
	n := s.Name
	w := func(set bool, key, msg string) {
		if set {
			v.warn(n, key, msg)
		}
	}
	const ign = "ignored"
	w(s.Deploy != nil, "deploy", "ignored: the environment's class sets resources")
	w(s.Restart != "" && s.Restart != "no", "restart", "ignored: services live and stop with the environment")
	w(s.ContainerName != "", "container_name", "ignored: use the service name")
	w(len(s.Labels) > 0 || len(s.LabelFiles) > 0, "labels", ign)
	w(len(s.Annotations) > 0, "annotations", ign)
	w(s.Logging != nil || s.LogDriver != "" || len(s.LogOpt) > 0, "logging", "ignored: output goes to the environment's logs")
	w(s.CPUCount != 0 || s.CPUPercent != 0 || s.CPUPeriod != 0 || s.CPUQuota != 0 || s.CPUS != 0 ||
		s.CPUShares != 0 || s.CPUSet != "" || s.CPURTPeriod != 0 || s.CPURTRuntime != 0, "cpus", "ignored: the environment's class sets CPU")
	w(s.MemLimit != 0 || s.MemReservation != 0 || s.MemSwapLimit != 0 || s.MemSwappiness != 0 || s.OomKillDisable || s.OomScoreAdj != 0,
		"mem_limit", "ignored: the environment's class sets memory")
	w(s.PidsLimit != 0, "pids_limit", "ignored: the environment's class sets it")
	w(s.BlkioConfig != nil, "blkio_config", ign)
	w(len(s.Ulimits) > 0, "ulimits", ign)
	w(len(s.Sysctls) > 0, "sysctls", ign)
	w(s.ShmSize != 0, "shm_size", ign)
	w(len(s.DNS) > 0 || len(s.DNSSearch) > 0 || len(s.DNSOpts) > 0, "dns", "ignored: the environment's resolver is used")
	w(s.DomainName != "", "domainname", ign)
	w(s.MacAddress != "", "mac_address", ign)
	w(len(s.ExternalLinks) > 0, "external_links", ign)
	w(s.Platform != "", "platform", "ignored: images run on the runner's platform")
	w(s.Init != nil && *s.Init, "init", "ignored")
	w(s.ReadOnly, "read_only", ign)
	w(s.StopSignal != "" || s.StopGracePeriod != nil, "stop_signal", ign)
	w(len(s.GroupAdd) > 0, "group_add", ign)
	w(len(s.StorageOpt) > 0, "storage_opt", ign)
	w(s.Develop != nil, "develop", ign)
	w(s.CredentialSpec != nil, "credential_spec", ign)
	w(s.Umask != nil, "umask", ign)
	for name, nc := range s.Networks {
		if nc != nil && (len(nc.Aliases) > 0 || nc.Ipv4Address != "" || nc.Ipv6Address != "") {
			v.warn(n, "networks."+name, "aliases and addresses are ignored")
		}
	}
	for _, p := range s.Ports {
		if p.Published != "" || p.HostIP != "" {
			v.warn(n, "ports", "published ports are reported as environment ports, not bound on the host")
			break
		}
	}
}

func relPath(repo, p string) string {
	if r, err := filepath.Rel(repo, p); err == nil && within(repo, p) {
		return r
	}
	return p
}
