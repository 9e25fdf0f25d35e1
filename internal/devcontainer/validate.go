package devcontainer

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Allow is a runner's policy for settings that weaken an environment's
// isolation. The zero value allows none of them.
type Allow struct {
	// Privileged permits privileged: true, --privileged and unconfined
	// security options.
	Privileged bool
	// Capabilities are the capabilities capAdd may name ("SYS_PTRACE";
	// "CAP_" prefix and case are ignored). "ALL" allows any.
	Capabilities []string
	// Build: the runner can build images from Dockerfiles.
	Build bool
	// Compose: the runner can run Docker Compose configurations.
	Compose bool
}

func (a Allow) capAllowed(c string) bool {
	c = normCap(c)
	for _, x := range a.Capabilities {
		if x = normCap(x); x == c || x == "ALL" {
			return true
		}
	}
	return false
}

// granted lists the capabilities a grants, for messages.
func (a Allow) granted() string {
	if len(a.Capabilities) == 0 {
		return "none"
	}
	caps := make([]string, len(a.Capabilities))
	for i, c := range a.Capabilities {
		caps[i] = normCap(c)
	}
	return strings.Join(caps, ", ")
}

func normCap(c string) string {
	return strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(c)), "CAP_")
}

// RunArgs is what cove takes from runArgs: the options that only affect the
// environment itself. Everything else in runArgs is refused by Check.
type RunArgs struct {
	CapAdd      []string
	CapDrop     []string
	Env         map[string]string
	Labels      map[string]string
	SecurityOpt []string
	Init        bool
	Hostname    string
	AddHosts    []string
	// Ignored are options that have no meaning in cove (--name, --rm, ...).
	Ignored []string
}

// runArgRule is why a runArgs option is refused and what to use instead.
type runArgRule struct{ reason, remedy string }

const (
	useCapAdd       = `add only the capabilities you need with "capAdd"`
	useMounts       = `use "mounts" with type=volume (a named volume that belongs to the environment, e.g. "type=volume,source=cache,target=/cache") or type=tmpfs`
	ownNamespace    = "an environment always has its own %s namespace: sharing the host's (or another container's) would break its isolation"
	fromClass       = "an environment's resources come from its class"
	acceptedRunArgs = "runArgs accepts --cap-add, --cap-drop, -e/--env, -l/--label, --security-opt, --init, -h/--hostname and --add-host (--name, --rm, -d, -i, -t are ignored)"
)

// refusedRunArgs are the runArgs options refused by name.
var refusedRunArgs = map[string]runArgRule{
	"--privileged": {"privileged mode gives the environment every capability and the host's devices",
		`remove it; ` + useCapAdd + `. "privileged": true is the property for it, and a runner grants it only when the environment's class allows privileged mode`},
	"--network":      {"an environment always has its own network", `remove it; to reach a port of the environment, list it in "forwardPorts"`},
	"--net":          {"an environment always has its own network", `remove it; to reach a port of the environment, list it in "forwardPorts"`},
	"--pid":          {fmt.Sprintf(ownNamespace, "PID"), "remove it"},
	"--ipc":          {fmt.Sprintf(ownNamespace, "IPC"), "remove it"},
	"--uts":          {fmt.Sprintf(ownNamespace, "UTS"), `remove it; to set the hostname, use "--hostname NAME"`},
	"--userns":       {fmt.Sprintf(ownNamespace, "user"), "remove it"},
	"--cgroupns":     {fmt.Sprintf(ownNamespace, "cgroup"), "remove it"},
	"--volume":       {"it mounts a host path or a Docker volume, which cove does not manage", useMounts},
	"-v":             {"it mounts a host path or a Docker volume, which cove does not manage", useMounts},
	"--mount":        {`mounts are written in the "mounts" property`, `move it to "mounts" (for example "type=volume,source=cache,target=/cache")`},
	"--device":       {"host devices are never passed to an environment", `remove it; for a GPU, ask for one with "hostRequirements": {"gpu": true}`},
	"--gpus":         {"GPUs come from the environment's class", `use "hostRequirements": {"gpu": true}, which picks a class with a GPU`},
	"--volumes-from": {"an environment cannot use another container's volumes", `use a named volume in "mounts" ("type=volume,source=NAME,target=/PATH")`},
	"--cpus":         {fromClass, `use "hostRequirements": {"cpus": N}, which picks a class with enough CPUs`},
	"--memory":       {fromClass, `use "hostRequirements": {"memory": "8gb"}, which picks a class with enough memory`},
	"-m":             {fromClass, `use "hostRequirements": {"memory": "8gb"}, which picks a class with enough memory`},
	"--shm-size":     {fromClass, "remove it"},
	"--user":         {`the user is set by properties cove reads`, `use "containerUser" (the user of the container's processes) or "remoteUser" (the user of lifecycle commands and sessions)`},
	"-u":             {`the user is set by properties cove reads`, `use "containerUser" (the user of the container's processes) or "remoteUser" (the user of lifecycle commands and sessions)`},
	"--publish":      {"cove publishes no ports on the runner host", `list the port in "forwardPorts": cove forwards it through its port proxy (see "cove ports")`},
	"-p":             {"cove publishes no ports on the runner host", `list the port in "forwardPorts": cove forwards it through its port proxy (see "cove ports")`},
}

// runArgTakesValue are the accepted options that take a value.
var runArgTakesValue = map[string]bool{"--cap-add": true, "--cap-drop": true, "--env": true, "-e": true,
	"--label": true, "-l": true, "--security-opt": true, "--hostname": true, "-h": true,
	"--add-host": true, "--name": true}

// runArgsAt are the runArgs indexes of RunArgs' CapAdd and SecurityOpt
// values, for messages.
type runArgsAt struct{ capAdd, securityOpt []int }

// parseRunArgs maps the safe subset of runArgs and refuses the rest; loc
// locates runArgs[i].
func parseRunArgs(args []string, loc func(string) Location) (RunArgs, []Refusal) {
	r, _, refs := parseRunArgsAt(args, loc)
	return r, refs
}

// parseRunArgsAt is parseRunArgs, also saying where the values are.
func parseRunArgsAt(args []string, loc func(string) Location) (RunArgs, runArgsAt, []Refusal) {
	var r RunArgs
	var at runArgsAt
	var refs []Refusal
	for i := 0; i < len(args); i++ {
		a, start := args[i], i
		here := []Location{loc(fmt.Sprintf("runArgs[%d]", i))}
		name, val, hasVal := strings.Cut(a, "=")
		if !strings.HasPrefix(name, "-") {
			refs = append(refs, Refusal{Locations: here,
				Reason: fmt.Sprintf("%q is not a docker run option", a),
				Remedy: `runArgs holds options such as "--cap-add=SYS_PTRACE"; the image goes in "image" and a command in a lifecycle property such as "postCreateCommand"`})
			continue
		}
		rule, refused := refusedRunArgs[name]
		if (runArgTakesValue[name] || refused && name != "--privileged") && !hasVal {
			if i+1 >= len(args) {
				refs = append(refs, Refusal{Locations: here, Reason: fmt.Sprintf("%s needs a value", name),
					Remedy: fmt.Sprintf(`write it as "%s=VALUE" or follow it with the value as the next element`, name)})
				continue
			}
			i++
			val = args[i]
			a += " " + val
		}
		switch name {
		case "--cap-add":
			r.CapAdd = append(r.CapAdd, val)
			at.capAdd = append(at.capAdd, start)
		case "--cap-drop":
			r.CapDrop = append(r.CapDrop, val)
		case "--env", "-e":
			k, v, _ := strings.Cut(val, "=")
			if r.Env == nil {
				r.Env = map[string]string{}
			}
			r.Env[k] = v
		case "--label", "-l":
			k, v, _ := strings.Cut(val, "=")
			if r.Labels == nil {
				r.Labels = map[string]string{}
			}
			r.Labels[k] = v
		case "--security-opt":
			r.SecurityOpt = append(r.SecurityOpt, val)
			at.securityOpt = append(at.securityOpt, start)
		case "--init":
			r.Init = !hasVal || val == "true"
		case "--hostname", "-h":
			r.Hostname = val
		case "--add-host":
			r.AddHosts = append(r.AddHosts, val)
		case "--name", "--rm", "-d", "--detach", "-it", "-i", "-t", "--interactive", "--tty":
			r.Ignored = append(r.Ignored, a)
		default:
			refs = append(refs, runArgRefusal(name, val, a, here, rule, refused))
		}
	}
	return r, at, refs
}

// runArgRefusal is the refusal of option name (as written: a).
func runArgRefusal(name, val, a string, at []Location, rule runArgRule, known bool) Refusal {
	switch {
	case (name == "--network" || name == "--net") && val == "host":
		return hostNetwork(at, fmt.Sprintf("%q", a))
	case strings.Contains(val, "docker.sock"):
		src, _, _ := strings.Cut(val, ":")
		return dockerSocket(at, src)
	case (name == "--pid" || name == "--ipc" || name == "--uts" || name == "--userns" || name == "--cgroupns") && val == "host":
		return Refusal{Key: "runArgs:" + name + "=host", Locations: at,
			Reason: fmt.Sprintf("%q shares the runner host's namespace: %s", a, rule.reason), Remedy: rule.remedy}
	case !known:
		return Refusal{Key: "runArgs:" + name, Locations: at,
			Reason: fmt.Sprintf("%q is a docker run option cove does not support", a),
			Remedy: "remove it; " + acceptedRunArgs}
	}
	return Refusal{Key: "runArgs:" + a, Locations: at, Reason: fmt.Sprintf("%q is refused: %s", a, rule.reason), Remedy: rule.remedy}
}

// hostNetwork refuses the host's network.
func hostNetwork(at []Location, what string) Refusal {
	return Refusal{Key: "network=host", Locations: at,
		Reason: what + " asks for the runner host's network: an environment always has its own network, and the host's would expose the runner's services to it",
		Remedy: `remove it; to reach a port of the environment from your machine, list it in "forwardPorts" (cove forwards it; see "cove ports")`}
}

// dockerSocket refuses a mount of the Docker socket.
func dockerSocket(at []Location, src string) Refusal {
	return Refusal{Key: "docker.sock", Locations: at,
		Reason: fmt.Sprintf("mounting the Docker socket %s would give the environment root on the runner host (and cove runs no Docker daemon)", src),
		Remedy: "remove it; Docker inside an environment needs a class that offers it, and no class offers Docker today"}
}

// Check fails with one user message that names every property cove cannot
// honour: a missing image (the reference CLI's message, on its own),
// Dockerfile and Compose configurations the runner cannot run, legacy
// feature ids, runArgs beyond the safe subset, bind mounts of host paths,
// and privileged settings or capabilities that allow does not permit.
// Each problem is reported once, with every place that asks for it.
func (c *Config) Check(allow Allow) error {
	if err := c.missingImage(); err != nil {
		return err
	}
	var rs Refusals
	if c.isDockerfile() && allow.Build {
		if _, err := c.DockerBuild(); err != nil {
			return err
		}
	} else if c.isDockerfile() {
		prop := "build"
		if _, ok := c.Raw["dockerFile"]; ok {
			prop = "dockerFile"
		}
		rs.Add(Refusal{Locations: []Location{c.Loc(prop)},
			Reason: "this runner cannot build images from Dockerfiles (its operator configured no buildkitd; see docs/runners.md)",
			Remedy: `use "image" with an image built elsewhere, or create the environment on a runner that builds Dockerfiles`})
	}
	if _, ok := c.Raw["dockerComposeFile"]; ok && !allow.Compose {
		rs.Add(Refusal{Locations: []Location{c.Loc("dockerComposeFile")},
			Reason: "this runner cannot run Docker Compose configurations (it runs without environment networking, --network=false; see docs/runners.md)",
			Remedy: `use "image", or create the environment on a runner with networking`})
	} else if ok {
		if _, err := c.Compose(); err != nil {
			return err
		}
	}
	for _, f := range c.Features {
		if r, ok := legacyFeature(f.ID, c.Loc(fmt.Sprintf("features[%q]", f.ID))); ok {
			rs.Add(r)
		}
	}
	for _, r := range c.problems {
		rs.Add(r)
	}
	_, at, _ := parseRunArgsAt(c.RunArgs, c.Loc)
	p := policyInput{allow: allow, workspace: c.LocalWorkspaceFolder()}
	if c.Privileged != nil && *c.Privileged {
		p.privileged = []Location{c.Loc("privileged")}
	}
	for i, v := range c.CapAdd {
		p.capAdd = append(p.capAdd, located[string]{v, c.Loc(fmt.Sprintf("capAdd[%d]", i))})
	}
	for j, v := range c.Run.CapAdd {
		p.capAdd = append(p.capAdd, located[string]{v, c.Loc(fmt.Sprintf("runArgs[%d]", runArgAt(at.capAdd, j)))})
	}
	for i, v := range c.SecurityOpt {
		p.securityOpt = append(p.securityOpt, located[string]{v, c.Loc(fmt.Sprintf("securityOpt[%d]", i))})
	}
	for j, v := range c.Run.SecurityOpt {
		p.securityOpt = append(p.securityOpt, located[string]{v, c.Loc(fmt.Sprintf("runArgs[%d]", runArgAt(at.securityOpt, j)))})
	}
	for i, m := range c.Mounts {
		p.mounts = append(p.mounts, located[Mount]{m, c.Loc(fmt.Sprintf("mounts[%d]", i))})
	}
	p.check(&rs)
	return rs.Err(c.File())
}

// runArgAt is the runArgs index of the j-th value (a RunArgs built by
// hand has no indexes: then the values' own order stands in).
func runArgAt(at []int, j int) int {
	if j < len(at) {
		return at[j]
	}
	return j
}

// located is a value and where it is written.
type located[T any] struct {
	v  T
	at Location
}

// policyInput is what the policy checks: the properties image metadata and
// features can also set, each value with its location.
type policyInput struct {
	allow       Allow
	workspace   string // the repository's folder: bind mounts of its folders are allowed
	privileged  []Location
	capAdd      []located[string]
	securityOpt []located[string]
	mounts      []located[Mount]
}

func (p policyInput) check(rs *Refusals) {
	allow := p.allow
	if len(p.privileged) > 0 && !allow.Privileged {
		rs.Add(Refusal{Key: "privileged", Locations: p.privileged,
			Reason: "privileged mode gives the environment every capability and the host's devices, and no class of this runner allows it",
			Remedy: fmt.Sprintf(`remove "privileged": true and %s (this runner grants: %s)`, useCapAdd, allow.granted())})
	}
	for _, c := range p.capAdd {
		if allow.capAllowed(c.v) {
			continue
		}
		name := normCap(c.v)
		rs.Add(Refusal{Key: "capAdd:" + name, Locations: []Location{c.at},
			Reason: fmt.Sprintf("capability %s is not granted by this runner's classes (they grant: %s)", name, allow.granted()),
			Remedy: fmt.Sprintf("remove %s; if a tool needs it, ask the runner's operator for a class that grants it", name)})
	}
	for _, o := range p.securityOpt {
		if r, ok := securityOptRefusal(o.v, o.at, allow); ok {
			rs.Add(r)
		}
	}
	for _, m := range p.mounts {
		if r, ok := mountRefusal(m.v, m.at, p.workspace); ok {
			rs.Add(r)
		}
	}
}

// securityOptRefusal refuses a security option allow does not permit.
func securityOptRefusal(o string, at Location, allow Allow) (Refusal, bool) {
	norm := strings.ReplaceAll(strings.TrimSpace(o), ":", "=")
	k, v, _ := strings.Cut(norm, "=")
	unconfined := v == "unconfined" || k == "label" && v == "disable"
	switch {
	case k == "no-new-privileges":
		return Refusal{}, false
	case unconfined && allow.Privileged:
		return Refusal{}, false
	case unconfined:
		what := map[string]string{"seccomp": "turns off the system-call filter", "apparmor": "turns off AppArmor confinement",
			"label": "turns off SELinux labelling", "systempaths": "exposes the kernel's /proc and /sys paths"}[k]
		if what == "" {
			what = "loosens the environment's confinement"
		}
		return Refusal{Key: "securityOpt:" + norm, Locations: []Location{at},
			Reason: fmt.Sprintf("%q %s, which only privileged classes allow, and this runner has none", norm, what),
			Remedy: "remove it; if a debugger needs it, \"capAdd\": [\"SYS_PTRACE\"] is usually enough where the class grants it"}, true
	}
	return Refusal{Key: "securityOpt:" + norm, Locations: []Location{at},
		Reason: fmt.Sprintf("security option %q is not supported (cove applies its own seccomp, AppArmor and no-new-privileges settings)", o),
		Remedy: `remove it ("no-new-privileges" is the only security option cove accepts)`}, true
}

// mountRefusal refuses a mount cove does not make.
func mountRefusal(m Mount, at Location, workspace string) (Refusal, bool) {
	const example = `"type=volume,source=NAME,target=/PATH"`
	switch {
	case m.Problem != "":
		return Refusal{Locations: []Location{at}, Reason: m.Problem,
			Remedy: "write it as " + example + ` or {"type": "volume", "source": "NAME", "target": "/PATH"}`}, true
	case m.Target == "":
		return Refusal{Locations: []Location{at}, Reason: "the mount has no target",
			Remedy: `add "target=/PATH", the path in the environment`}, true
	case strings.Contains(m.Source, "docker.sock"):
		return dockerSocket([]Location{at}, m.Source), true
	case m.Type == "bind":
		if _, ok := RepoBindSource(m.Source, workspace); ok {
			return Refusal{}, false // a folder of the repository, mounted confined to it by the runner
		}
		return Refusal{Locations: []Location{at},
			Reason: fmt.Sprintf("bind mount of host path %q: an environment sees no files of the runner host, only folders of the repository", m.Source),
			Remedy: `bind a folder of the repository ("source=${localWorkspaceFolder}/.devcontainer/data"), or use type=volume for data that must persist (` + example + `)`}, true
	case m.Type == "volume", m.Type == "tmpfs":
		return Refusal{}, false
	}
	return Refusal{Locations: []Location{at}, Reason: fmt.Sprintf("mount type %q is not supported", m.Type),
		Remedy: "use type=volume or type=tmpfs"}, true
}

// featuresDistribution is the spec's page on how features are referenced.
const featuresDistribution = "https://containers.dev/implementors/features-distribution/"

// legacyFeatureNames are the retired short feature ids the reference CLI
// still maps to ghcr.io/devcontainers/features (renamed ones to their new
// name); legacyFeatureOptions those folded into another feature's option.
var (
	legacyFeatureNames = map[string]string{"aws-cli": "aws-cli", "azure-cli": "azure-cli", "desktop-lite": "desktop-lite",
		"docker-in-docker": "docker-in-docker", "docker-from-docker": "docker-outside-of-docker", "dotnet": "dotnet", "git": "git",
		"git-lfs": "git-lfs", "github-cli": "github-cli", "java": "java", "kubectl-helm-minikube": "kubectl-helm-minikube",
		"node": "node", "powershell": "powershell", "python": "python", "ruby": "ruby", "rust": "rust", "sshd": "sshd",
		"terraform": "terraform", "golang": "go", "common": "common-utils"}
	legacyFeatureOptions = map[string][2]string{"gradle": {"java", "installGradle"}, "maven": {"java", "installMaven"},
		"jupyterlab": {"python", "installJupyterlab"}}
)

// legacyFeature refuses a retired short feature id ("homebrew": "latest"):
// one without a registry and path, which the reference CLI either maps to
// ghcr.io/devcontainers/features or refuses.
func legacyFeature(id string, at Location) (Refusal, bool) {
	if id == "" || strings.ContainsAny(id, `/\`) {
		return Refusal{}, false
	}
	const ghcr = "ghcr.io/devcontainers/features/"
	r := Refusal{Locations: []Location{at},
		Reason: fmt.Sprintf("%q is a retired short feature id (features are now referenced by registry and path, see %s)", id, featuresDistribution)}
	lower := strings.ToLower(id)
	switch {
	case legacyFeatureNames[lower] != "":
		r.Remedy = fmt.Sprintf(`write "%s%s:1" instead`, ghcr, legacyFeatureNames[lower])
	case legacyFeatureOptions[lower][0] != "":
		o := legacyFeatureOptions[lower]
		r.Remedy = fmt.Sprintf(`write "%s%s:1": {"%s": true} instead`, ghcr, o[0], o[1])
	default:
		r.Remedy = fmt.Sprintf(`find its replacement at https://containers.dev/features and write its full id (for example "ghcr.io/devcontainers/features/node:1"); a feature in the repository is written "./%s"`, id)
	}
	return r, true
}

// check is Config.Check for what image metadata and features add:
// privileged mode, capabilities, security options and mounts from every
// entry, each refusal located in the devcontainer.json or named by the
// entry it comes from (a feature, the image's metadata).
func (m *Merged) check(allow Allow) error {
	p := policyInput{allow: allow, workspace: m.Config.LocalWorkspaceFolder()}
	for i, e := range m.Entries {
		if truthy(e["privileged"]) {
			p.privileged = append(p.privileged, m.loc(i, "privileged"))
		}
		for _, k := range []string{"capAdd", "securityOpt"} {
			l, _ := e[k].([]any)
			for j, v := range l {
				s, ok := v.(string)
				if !ok {
					continue
				}
				lv := located[string]{s, m.loc(i, fmt.Sprintf("%s[%d]", k, j))}
				if k == "capAdd" {
					p.capAdd = append(p.capAdd, lv)
				} else {
					p.securityOpt = append(p.securityOpt, lv)
				}
			}
		}
	}
	run := m.Config.Run
	_, at, _ := parseRunArgsAt(m.Config.RunArgs, m.Config.Loc)
	for j, v := range run.CapAdd {
		p.capAdd = append(p.capAdd, located[string]{v, m.Config.Loc(fmt.Sprintf("runArgs[%d]", runArgAt(at.capAdd, j)))})
	}
	for j, v := range run.SecurityOpt {
		p.securityOpt = append(p.securityOpt, located[string]{v, m.Config.Loc(fmt.Sprintf("runArgs[%d]", runArgAt(at.securityOpt, j)))})
	}
	for k, mt := range m.t.Mounts {
		p.mounts = append(p.mounts, located[Mount]{mt, m.mountLoc(k, mt)})
	}
	var rs Refusals
	p.check(&rs)
	return rs.Err(m.Config.File() + " with its image's and features' metadata")
}

// loc locates a property of entry i: in the devcontainer.json for its own
// entry, else by the entry's origin.
func (m *Merged) loc(i int, path string) Location {
	if m.configEntry && i == len(m.Entries)-1 {
		return m.Config.Loc(path)
	}
	if id, ok := m.Entries[i]["id"].(string); ok && id != "" {
		return Location{Origin: fmt.Sprintf("feature %q", id), Path: path}
	}
	return Location{Origin: "the image's metadata (label " + MetadataLabel + ")", Path: path}
}

// mountLoc locates the k-th merged mount: the last entry with a mount of
// its target (the one the merge kept).
func (m *Merged) mountLoc(k int, mt Mount) Location {
	for i := len(m.Entries) - 1; i >= 0; i-- {
		l, _ := m.Entries[i]["mounts"].([]any)
		for j := len(l) - 1; j >= 0; j-- {
			b, err := json.Marshal(l[j])
			if err != nil {
				continue
			}
			var e Mount
			if e.UnmarshalJSON(b) == nil && e.Target == mt.Target {
				return m.loc(i, fmt.Sprintf("mounts[%d]", j))
			}
		}
	}
	return Location{Origin: "the merged configuration", Path: fmt.Sprintf("mounts[%d]", k)}
}
