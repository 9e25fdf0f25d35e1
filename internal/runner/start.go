package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/lifecycle"
	"github.com/covedev/cove/internal/runtime"
)

// start starts the environment's container and, for a Compose
// configuration, its sibling services around it in start order. note
// reports progress.
func (m *startStep) start(ctx context.Context, e *stepEnv, note func(string)) error {
	env, lay, st := e.env, e.lay, e.st
	if err := protectEnvDir(lay, st); err != nil { // also for directories made by older runners
		return err
	}
	name := env.GetMetadata().GetName()
	att, err := m.net.attach(ctx, e)
	if err != nil {
		return err
	}
	netns := att.netns
	hostname := name
	if st.Image.DC != nil && st.Image.DC.Hostname != "" { // runArgs --hostname
		hostname = st.Image.DC.Hostname
	}
	if err := os.WriteFile(lay.Hostname(), []byte(hostname+"\n"), 0o644); err != nil {
		return err
	}
	if st.Image.DC != nil && (len(st.Image.DC.AddHosts) > 0 || st.Image.DC.Hostname != "") { // runArgs --add-host host:ip, --hostname
		var b strings.Builder
		if st.Image.DC.Hostname != "" {
			fmt.Fprintf(&b, "127.0.1.1\t%s\n", st.Image.DC.Hostname)
		}
		for _, h := range st.Image.DC.AddHosts {
			if host, ip, ok := strings.Cut(h, ":"); ok {
				fmt.Fprintf(&b, "%s\t%s\n", ip, host)
			}
		}
		if err := appendFile(lay.Hosts(), b.String()); err != nil {
			return err
		}
	}
	if cs := st.Image.Compose; cs != nil {
		// Services reach each other by name: they share the network
		// namespace, so every name is this host.
		if err := appendFile(lay.Hosts(), "127.0.0.1\t"+strings.Join(cs.Order, " ")+"\n"); err != nil {
			return err
		}
	}
	postAttach := []lifecycle.Command{}
	if st.Image.DC != nil && st.Image.DC.Hooks.PostAttach != nil {
		postAttach = st.Image.DC.Hooks.PostAttach
	}
	pa, err := json.Marshal(postAttach)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(lay.Etc(), "post-attach.json"), pa, 0o644); err != nil {
		return err
	}
	if err := m.keys.write(lay.Etc(), env.Id, st.IDMap.HostID); err != nil {
		return err
	}
	if err := os.MkdirAll(lay.Runtime(), 0o700); err != nil {
		return err
	}
	user := st.Image.User
	if user == "" {
		user = "root"
	}
	workdir := workspaces
	if st.Content.RepoName != "" {
		workdir = workspaces + "/" + st.Content.RepoName
	}
	procEnv := st.Image.Env
	if st.Image.DC != nil {
		if st.Image.DC.WorkspaceFolder != "" {
			workdir = st.Image.DC.WorkspaceFolder
		}
		if len(st.Image.DC.ContainerEnv) > 0 {
			procEnv = st.Image.DC.ContainerEnv
		}
		// The agent gives its environment to every session: remoteEnv
		// applies to what users and tools run (containerEnv to everything).
		procEnv = append(slices.Clone(procEnv), st.Image.DC.RemoteEnv...)
	}
	if err := os.MkdirAll(lay.LogDir(), 0o755); err != nil {
		return err
	}
	spec := runtime.Spec{
		ID:       env.Id,
		Hostname: hostname,
		StateDir: lay.Runtime(),
		Rootfs:   lay.Rootfs(),
		IDMap:    st.IDMap,
		Process: runtime.Process{
			Args: agentArgs(user, workdir, st.Image.DC),
			Env:  append(withDefaultPath(procEnv), "COVE_ENVIRONMENT_ID="+env.Id, "COVE_ENVIRONMENT_NAME="+env.GetMetadata().GetName()),
			Cwd:  "/",
		},
		Mounts: []runtime.Mount{
			{Source: m.agentBinary, Destination: agentBinary, Type: "bind", Options: []string{"bind", "ro"}},
			{Source: lay.Etc(), Destination: agentEtcDir, Type: "bind", Options: []string{"bind", "ro"}},
			{Source: lay.Workspace(), Destination: workspaces, Type: "bind", Options: []string{"rbind"}},
			{Source: lay.Hosts(), Destination: "/etc/hosts", Type: "bind", Options: []string{"bind", "ro"}},
			{Source: lay.Hostname(), Destination: "/etc/hostname", Type: "bind", Options: []string{"bind", "ro"}},
		},
		Resources: m.classes.resources(env.GetSpec().GetClassId()),
		NetNSPath: netns,
	}
	if netns != "" {
		spec.Mounts = append(spec.Mounts, runtime.Mount{Source: lay.ResolvConf(), Destination: "/etc/resolv.conf", Type: "bind", Options: []string{"bind", "ro"}})
	}
	spec.Mounts = append(spec.Mounts, runtime.Mount{Source: lay.LogDir(), Destination: logDir, Type: "bind", Options: []string{"bind", "ro"}})
	stg, err := newStager(lay.Workspace(), lay.Mnt())
	if err != nil {
		return err
	}
	if st.Image.DC != nil {
		if st.Image.DC.MountTarget != "" {
			// The checkout itself, staged: the runtime never mounts a path
			// the environment controls.
			src, err := stg.stage(st.Content.RepoName, confine.Beneath, "workspaceMount")
			if err != nil {
				return err
			}
			spec.Mounts = append(spec.Mounts, runtime.Mount{Source: src, Destination: st.Image.DC.MountTarget, Type: "bind", Options: []string{"rbind"}})
		}
		vols, err := m.volumeMounts(lay, st, st.Image.DC.Mounts, lay.Rootfs(), stg)
		if err != nil {
			return err
		}
		spec.Mounts = append(spec.Mounts, vols...)
	}
	if featuresPending(st) {
		// Writable: install scripts chmod themselves. Per-environment scratch.
		spec.Mounts = append(spec.Mounts, runtime.Mount{Source: lay.Features(), Destination: featuresDir, Type: "bind", Options: []string{"bind"}})
	}
	if cs := st.Image.Compose; cs != nil {
		spec.Group = env.Id // one cgroup for all the services
		// The dev service's output is a service log like the others'.
		spec.ConsoleLog = lay.ServiceLog(cs.DevService)
		if err := touchLog(spec.ConsoleLog); err != nil {
			return err
		}
		if err := m.startServices(ctx, env, lay, st, netns, true, note); err != nil {
			return err
		}
		if err := m.waitDeps(ctx, env.Id, lay, st, cs.DevService, cs.DevDependsOn, note); err != nil {
			return err
		}
		note("starting")
	}
	if err := m.startContainer(ctx, spec, lay.AgentSocket()); err != nil {
		return err
	}
	return m.startServices(ctx, env, lay, st, netns, false, note)
}

// startContainer starts the container of spec unless it runs already,
// handing its agent a new listening socket at sock.
func (m *startStep) startContainer(ctx context.Context, spec runtime.Spec, sock string) error {
	cur, err := m.rt.State(ctx, spec.ID)
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
	return m.rt.Start(ctx, spec)
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
func consoleLog(lay envdir.Layout, st *envState) string {
	if st != nil && st.Image.Compose != nil {
		return lay.ServiceLog(st.Image.Compose.DevService)
	}
	return lay.ConsoleLog()
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
