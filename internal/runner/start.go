package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/lifecycle"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// start starts the environment's container and, for a Compose
// configuration, its sibling services around it in start order. note
// reports progress.
func (r *Runner) start(ctx context.Context, env *covev1.Environment, lay layout, st *envState, note func(string)) error {
	if err := protectEnvDir(lay, st); err != nil { // also for directories made by older runners
		return err
	}
	name := env.GetMetadata().GetName()
	netns, err := r.attachNetwork(ctx, env.Id, name, env.GetSpec().GetClassId(), lay, st)
	if err != nil {
		return err
	}
	hostname := name
	if st.DC != nil && st.DC.Hostname != "" { // runArgs --hostname
		hostname = st.DC.Hostname
	}
	if err := os.WriteFile(lay.hostname(), []byte(hostname+"\n"), 0o644); err != nil {
		return err
	}
	if st.DC != nil && (len(st.DC.AddHosts) > 0 || st.DC.Hostname != "") { // runArgs --add-host host:ip, --hostname
		var b strings.Builder
		if st.DC.Hostname != "" {
			fmt.Fprintf(&b, "127.0.1.1\t%s\n", st.DC.Hostname)
		}
		for _, h := range st.DC.AddHosts {
			if host, ip, ok := strings.Cut(h, ":"); ok {
				fmt.Fprintf(&b, "%s\t%s\n", ip, host)
			}
		}
		if err := appendFile(lay.hosts(), b.String()); err != nil {
			return err
		}
	}
	if cs := st.Compose; cs != nil {
		// Services reach each other by name: they share the network
		// namespace, so every name is this host.
		if err := appendFile(lay.hosts(), "127.0.0.1\t"+strings.Join(cs.Order, " ")+"\n"); err != nil {
			return err
		}
	}
	postAttach := []lifecycle.Command{}
	if st.DC != nil && st.DC.Hooks.PostAttach != nil {
		postAttach = st.DC.Hooks.PostAttach
	}
	pa, err := json.Marshal(postAttach)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(lay.etc(), "post-attach.json"), pa, 0o644); err != nil {
		return err
	}
	if err := r.keys.write(lay.etc(), env.Id, st.IDMap.HostID); err != nil {
		return err
	}
	if err := os.MkdirAll(lay.runtime(), 0o700); err != nil {
		return err
	}
	user := st.User
	if user == "" {
		user = "root"
	}
	workdir := workspaces
	if st.RepoName != "" {
		workdir = workspaces + "/" + st.RepoName
	}
	procEnv := st.Env
	if st.DC != nil {
		if st.DC.WorkspaceFolder != "" {
			workdir = st.DC.WorkspaceFolder
		}
		if len(st.DC.ContainerEnv) > 0 {
			procEnv = st.DC.ContainerEnv
		}
		// The agent gives its environment to every session: remoteEnv
		// applies to what users and tools run (containerEnv to everything).
		procEnv = append(slices.Clone(procEnv), st.DC.RemoteEnv...)
	}
	if err := os.MkdirAll(lay.logDir(), 0o755); err != nil {
		return err
	}
	spec := runtime.Spec{
		ID:       env.Id,
		Hostname: hostname,
		StateDir: lay.runtime(),
		Rootfs:   lay.rootfs(),
		IDMap:    st.IDMap,
		Process: runtime.Process{
			Args: agentArgs(user, workdir, st.DC),
			Env:  append(withDefaultPath(procEnv), "COVE_ENVIRONMENT_ID="+env.Id, "COVE_ENVIRONMENT_NAME="+env.GetMetadata().GetName()),
			Cwd:  "/",
		},
		Mounts: []runtime.Mount{
			{Source: r.cfg.AgentBinary, Destination: agentBinary, Type: "bind", Options: []string{"bind", "ro"}},
			{Source: lay.etc(), Destination: agentEtcDir, Type: "bind", Options: []string{"bind", "ro"}},
			{Source: lay.workspace(), Destination: workspaces, Type: "bind", Options: []string{"rbind"}},
			{Source: lay.hosts(), Destination: "/etc/hosts", Type: "bind", Options: []string{"bind", "ro"}},
			{Source: lay.hostname(), Destination: "/etc/hostname", Type: "bind", Options: []string{"bind", "ro"}},
		},
		Resources: r.resources(env.GetSpec().GetClassId()),
		NetNSPath: netns,
	}
	if netns != "" {
		spec.Mounts = append(spec.Mounts, runtime.Mount{Source: lay.resolvConf(), Destination: "/etc/resolv.conf", Type: "bind", Options: []string{"bind", "ro"}})
	}
	spec.Mounts = append(spec.Mounts, runtime.Mount{Source: lay.logDir(), Destination: logDir, Type: "bind", Options: []string{"bind", "ro"}})
	stg, err := newStager(lay.workspace(), lay.mnt())
	if err != nil {
		return err
	}
	if st.DC != nil {
		if st.DC.MountTarget != "" {
			// The checkout itself, staged: the runtime never mounts a path
			// the environment controls.
			src, err := stg.stage(st.RepoName, confine.Beneath, "workspaceMount")
			if err != nil {
				return err
			}
			spec.Mounts = append(spec.Mounts, runtime.Mount{Source: src, Destination: st.DC.MountTarget, Type: "bind", Options: []string{"rbind"}})
		}
		vols, err := r.volumeMounts(lay, st, st.DC.Mounts, lay.rootfs(), stg)
		if err != nil {
			return err
		}
		spec.Mounts = append(spec.Mounts, vols...)
	}
	if st.DC != nil && st.DC.FeaturesPending {
		// Writable: install scripts chmod themselves. Per-environment scratch.
		spec.Mounts = append(spec.Mounts, runtime.Mount{Source: lay.features(), Destination: featuresDir, Type: "bind", Options: []string{"bind"}})
	}
	if cs := st.Compose; cs != nil {
		spec.Group = env.Id // one cgroup for all the services
		// The dev service's output is a service log like the others'.
		spec.ConsoleLog = lay.serviceLog(cs.DevService)
		if err := touchLog(spec.ConsoleLog); err != nil {
			return err
		}
		if err := r.startServices(ctx, env, lay, st, netns, true, note); err != nil {
			return err
		}
		if err := r.waitDeps(ctx, env.Id, lay, st, cs.DevService, cs.DevDependsOn, note); err != nil {
			return err
		}
		note("starting")
	}
	if err := r.startContainer(ctx, spec, lay.agentSocket()); err != nil {
		return err
	}
	if err := r.startServices(ctx, env, lay, st, netns, false, note); err != nil {
		return err
	}
	if !st.StartedOnce {
		st.StartedOnce = true
		return saveState(lay.state(), st)
	}
	return nil
}

// startContainer starts the container of spec unless it runs already,
// handing its agent a new listening socket at sock.
func (r *Runner) startContainer(ctx context.Context, spec runtime.Spec, sock string) error {
	cur, err := r.rt.State(ctx, spec.ID)
	if err != nil {
		return err
	}
	if cur.Status == runtime.StatusRunning {
		return nil // its agent keeps the socket it was given
	}
	ln, err := listenAgent(sock)
	if err != nil {
		return err
	}
	defer ln.Close()
	spec.ExtraFiles = []*os.File{ln}
	return r.rt.Start(ctx, spec)
}

// agentListenArgs make the agent serve on the socket the runner hands it
// (descriptor 3), with its own host key and only its own client key.
var agentListenArgs = []string{"--listen-fd", "3", "--host-key", agentEtcDir + "/host_key",
	"--authorized-keys", agentEtcDir + "/runner_keys"}

// agentArgs is the agent's command line: PID 1 of the environment.
func agentArgs(user, workdir string, dc *dcState) []string {
	args := append([]string{agentBinary, "agent"}, agentListenArgs...)
	args = append(args, "--user", user, "--workdir", workdir, "--post-attach", agentEtcDir+"/post-attach.json")
	if dc == nil {
		return args
	}
	for _, ep := range dc.Entrypoints {
		args = append(args, "--entrypoint", ep)
	}
	for _, c := range dc.Command {
		args = append(args, "--command", c)
	}
	if dc.WorkingDir != "" {
		args = append(args, "--entrypoint-workdir", dc.WorkingDir)
	}
	if dc.UserEnvProbe != "" {
		args = append(args, "--user-env-probe", dc.UserEnvProbe)
	}
	return args
}

func withDefaultPath(env []string) []string {
	out := append([]string(nil), env...)
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			return out
		}
	}
	return append(out, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

func (r *Runner) resources(class string) runtime.Resources {
	for _, c := range r.cfg.Classes {
		if c.GetId() == class {
			return runtime.Resources{CPUMillis: int64(c.GetCpus()) * 1000, MemoryBytes: c.GetMemoryBytes(), Pids: int64(c.GetPids())}
		}
	}
	return runtime.Resources{}
}

func (r *Runner) waitAgent(ctx context.Context, lay layout, st *envState) error {
	deadline := time.Now().Add(agentTimeout)
	var err error
	// The agent usually listens within a few milliseconds of the start:
	// poll every millisecond for the first 50 ms, then back off.
	delay := time.Millisecond
	ep := r.agentEndpoint(filepath.Base(lay.dir))
	for time.Now().Before(deadline) {
		if err = r.probeAgent(ctx, ep); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		if time.Since(deadline.Add(-agentTimeout)) > 50*time.Millisecond {
			delay = min(delay*2, 50*time.Millisecond)
		}
	}
	return usererr.Wrap(err, "the environment's agent did not start within %s: %s", agentTimeout, tail(consoleLog(lay, st), 400))
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// consoleLog is where the environment's container writes its output.
func consoleLog(lay layout, st *envState) string {
	if st != nil && st.Compose != nil {
		return lay.serviceLog(st.Compose.DevService)
	}
	return filepath.Join(lay.runtime(), "console.log")
}

// touchLog creates a log file the runtime appends to, readable by the
// environment's agent (the environment's root, not the host's), which
// serves it.
func touchLog(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}
