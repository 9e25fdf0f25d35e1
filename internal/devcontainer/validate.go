package devcontainer

import (
	"fmt"
	"slices"
	"strings"

	"github.com/covedev/cove/internal/usererr"
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

func normCap(c string) string {
	return strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(c)), "CAP_")
}

// problem is one property cove cannot honour.
type problem struct {
	prop string
	msg  string
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

// refusedRunArgs explains the runArgs options that are refused by name.
var refusedRunArgs = map[string]string{
	"--privileged": "privileged mode", "--network": "a network setting", "--net": "a network setting",
	"--pid": "a PID namespace setting", "--ipc": "an IPC namespace setting", "--uts": "a UTS namespace setting",
	"--userns": "a user namespace setting", "--cgroupns": "a cgroup namespace setting",
	"--volume": "a host volume", "-v": "a host volume", "--mount": "a mount (use \"mounts\")",
	"--device": "a host device", "--gpus": "host GPUs", "--volumes-from": "another container's volumes",
	"--cpus": "a resource limit (use hostRequirements)", "--memory": "a resource limit (use hostRequirements)",
	"-m": "a resource limit (use hostRequirements)", "--shm-size": "a resource limit",
	"--user": "a user (use containerUser)", "-u": "a user (use containerUser)", "--publish": "a published port (use forwardPorts)",
	"-p": "a published port (use forwardPorts)",
}

// parseRunArgs maps the safe subset of runArgs and lists the rest.
func parseRunArgs(args []string) (RunArgs, []problem) {
	var r RunArgs
	var probs []problem
	for i := 0; i < len(args); i++ {
		a := args[i]
		prop := fmt.Sprintf("runArgs[%d]", i)
		name, val, hasVal := strings.Cut(a, "=")
		if !strings.HasPrefix(name, "-") {
			probs = append(probs, problem{prop, fmt.Sprintf("runArgs: %q is not an option", a)})
			continue
		}
		takesValue := map[string]bool{"--cap-add": true, "--cap-drop": true, "--env": true, "-e": true,
			"--label": true, "-l": true, "--security-opt": true, "--hostname": true, "-h": true,
			"--add-host": true, "--name": true}
		_, refused := refusedRunArgs[name]
		if (takesValue[name] || refused && name != "--privileged") && !hasVal {
			if i+1 >= len(args) {
				probs = append(probs, problem{prop, fmt.Sprintf("runArgs: %s needs a value", name)})
				continue
			}
			i++
			val = args[i]
			a += " " + val
		}
		switch name {
		case "--cap-add":
			r.CapAdd = append(r.CapAdd, val)
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
		case "--init":
			r.Init = !hasVal || val == "true"
		case "--hostname", "-h":
			r.Hostname = val
		case "--add-host":
			r.AddHosts = append(r.AddHosts, val)
		case "--name", "--rm", "-d", "--detach", "-it", "-i", "-t", "--interactive", "--tty":
			r.Ignored = append(r.Ignored, a)
		default:
			what := refusedRunArgs[name]
			if what == "" {
				what = "an option cove does not support"
			}
			if val == "host" || strings.Contains(val, "docker.sock") {
				what += " sharing the host's"
			}
			probs = append(probs, problem{prop, fmt.Sprintf("runArgs: %s (%s) is not allowed", a, what)})
		}
	}
	return r, probs
}

// Check fails with one user message that names every property cove cannot
// honour: a missing image (the reference CLI's message, on its own),
// Dockerfile and Compose configurations the runner cannot run, runArgs beyond
// the safe subset, bind mounts of host paths, and privileged settings or
// capabilities that allow does not permit.
func (c *Config) Check(allow Allow) error {
	if err := c.missingImage(); err != nil {
		return err
	}
	var probs []problem
	if c.isDockerfile() && allow.Build {
		if _, err := c.DockerBuild(); err != nil {
			return err
		}
	} else if c.isDockerfile() {
		prop := "build"
		if _, ok := c.Raw["dockerFile"]; ok {
			prop = "dockerFile"
		}
		probs = append(probs, problem{prop, prop + ": this runner cannot build images from Dockerfiles (it has no buildkitd; see docs/runners.md); use \"image\""})
	}
	if _, ok := c.Raw["dockerComposeFile"]; ok && !allow.Compose {
		probs = append(probs, problem{"dockerComposeFile", "dockerComposeFile: this runner cannot run Docker Compose configurations (it has no environment networking; see docs/runners.md); use \"image\""})
	} else if ok {
		if _, err := c.Compose(); err != nil {
			return err
		}
	}
	probs = append(probs, c.problems...)
	capAdd := append(slices.Clone(c.CapAdd), c.Run.CapAdd...)
	secOpt := append(slices.Clone(c.SecurityOpt), c.Run.SecurityOpt...)
	probs = append(probs, policyProblems(c.Privileged != nil && *c.Privileged, capAdd, secOpt, c.Mounts, allow)...)
	return c.problemError(probs)
}

// policyProblems checks the properties image metadata can also set.
func policyProblems(privileged bool, capAdd, securityOpt []string, mounts []Mount, allow Allow) []problem {
	var probs []problem
	if privileged && !allow.Privileged {
		probs = append(probs, problem{"privileged", "privileged: true is not allowed on this runner"})
	}
	var bad []string
	for _, c := range capAdd {
		if !allow.capAllowed(c) && !slices.Contains(bad, normCap(c)) {
			bad = append(bad, normCap(c))
		}
	}
	if len(bad) > 0 {
		allowed := "none"
		if len(allow.Capabilities) > 0 {
			allowed = strings.Join(allow.Capabilities, ", ")
		}
		probs = append(probs, problem{"capAdd", fmt.Sprintf("capAdd: %s not allowed on this runner (allowed: %s)", strings.Join(bad, ", "), allowed)})
	}
	for i, o := range securityOpt {
		k, v, _ := strings.Cut(strings.ReplaceAll(o, ":", "="), "=")
		switch {
		case k == "no-new-privileges":
		case (v == "unconfined" || k == "label" && v == "disable") && allow.Privileged:
		default:
			probs = append(probs, problem{fmt.Sprintf("securityOpt[%d]", i), fmt.Sprintf("securityOpt: %q is not allowed on this runner", o)})
		}
	}
	for i, m := range mounts {
		prop := fmt.Sprintf("mounts[%d]", i)
		switch {
		case m.Problem != "":
			probs = append(probs, problem{prop, fmt.Sprintf("mounts[%d]: %s", i, m.Problem)})
		case m.Target == "":
			probs = append(probs, problem{prop, fmt.Sprintf("mounts[%d]: a mount needs a target", i)})
		case strings.Contains(m.Source, "docker.sock"):
			probs = append(probs, problem{prop, fmt.Sprintf("mounts[%d]: mounting the Docker socket %s is not allowed", i, m.Source)})
		case m.Type == "bind":
			probs = append(probs, problem{prop, fmt.Sprintf("mounts[%d]: bind mount of host path %q is not allowed (use type=volume)", i, m.Source)})
		case m.Type == "volume", m.Type == "tmpfs":
		default:
			probs = append(probs, problem{prop, fmt.Sprintf("mounts[%d]: mount type %q is not supported (use volume or tmpfs)", i, m.Type)})
		}
	}
	return probs
}

func (c *Config) problemError(probs []problem) error {
	if len(probs) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: cove cannot run this dev container configuration:", c.Path)
	for _, p := range probs {
		fmt.Fprintf(&b, "\n  %s: %s", c.At(p.prop), p.msg)
	}
	return usererr.New("%s", b.String())
}
