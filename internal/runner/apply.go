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

	"github.com/covedev/cove/internal/content"
	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/lifecycle"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"golang.org/x/crypto/ssh"
)

// Paths inside every environment.
const (
	agentBinary  = "/.cove/bin/cove"
	agentRunDir  = "/.cove/run"
	agentEtcDir  = "/.cove/etc"
	workspaces   = "/workspaces"
	agentTimeout = 60 * time.Second
)

// apply runs steps in order. *stp is the environment's state (nil before
// prepare); steps update and persist it. progress reports sub-status
// changes in the background.
func (r *Runner) apply(ctx context.Context, w *worker, env *covev1.Environment, stp **envState, steps []step, progress, ready func()) error {
	lay := r.layout(env.Id)
	mark := func(sub **covev1.SubStatus, phase covev1.SubPhase, msg string) {
		w.sub(sub, phase, msg)
		progress()
	}
	for _, s := range steps {
		var err error
		began := time.Now()
		switch s {
		case stepPrepare:
			*stp, err = r.prepare(env.Id, lay)
		case stepClone:
			mark(&w.content, subInProgress, "cloning "+env.GetSpec().GetContent().GetGitUrl())
			err = r.clone(ctx, env, lay, *stp)
			if err != nil {
				mark(&w.content, subFailed, userMessage(err))
			} else {
				mark(&w.content, subReady, "")
			}
		case stepImage:
			mark(&w.machine, subInProgress, "pulling image")
			err = r.pullImage(ctx, w, env, lay, *stp)
		case stepMount:
			mark(&w.machine, subInProgress, "preparing root filesystem")
			err = r.mount(ctx, lay, *stp)
		case stepStart:
			mark(&w.machine, subInProgress, "starting")
			err = r.start(ctx, env, lay, *stp)
		case stepWaitAgent:
			err = r.waitAgent(ctx, lay)
		case stepDevcontainer:
			err = r.runDevcontainer(ctx, w, env, lay, *stp, progress, ready)
		case stepStop:
			mark(&w.machine, subInProgress, "stopping")
			err = r.rt.Stop(ctx, env.Id, r.cfg.StopGrace)
		case stepDeleteContainer:
			err = r.rt.Delete(ctx, env.Id)
		case stepUnmount:
			err = image.UnmountRootfs(ctx, r.rootfsConfig(lay, *stp))
		case stepRemove:
			err = r.remove(ctx, env.Id, lay, *stp)
		case stepReset:
			mark(&w.machine, subInProgress, "rebuilding")
			err = r.reset(lay, *stp, env.GetSpec().GetRebuildGeneration())
		}
		if err != nil {
			if s != stepClone {
				if msg, ok := usererr.Message(err); ok {
					mark(&w.machine, subFailed, msg)
				}
			}
			return fmt.Errorf("%s: %w", s, err)
		}
		r.log.Info("step done", "env", env.Id, "step", string(s), "took", time.Since(began))
	}
	return nil
}

func userMessage(err error) string {
	if msg, ok := usererr.Message(err); ok {
		return msg
	}
	return "internal error (see runner log)"
}

func (r *Runner) prepare(id string, lay layout) (*envState, error) {
	m, err := r.ranges.allocate(id)
	if err != nil {
		return nil, usererr.Wrap(err, "this runner is full: %v", err)
	}
	st := &envState{ID: id, IDMap: m}
	for _, d := range []string{lay.dir, lay.etc()} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			r.ranges.release(m)
			return nil, err
		}
	}
	if err := saveState(lay.state(), st); err != nil {
		r.ranges.release(m)
		return nil, err
	}
	return st, nil
}

func (r *Runner) clone(ctx context.Context, env *covev1.Environment, lay layout, st *envState) error {
	src := env.GetSpec().GetContent()
	if isLocalSource(src.GetGitUrl()) && !r.cfg.AllowLocalSources {
		return usererr.New("source %q is a local path, which this runner does not accept: use a git URL", src.GetGitUrl())
	}
	repo, err := content.Clone(ctx, content.Source{GitURL: src.GetGitUrl(), Ref: src.GetRef()}, content.Options{
		WorkspaceDir: lay.workspace(), StagingDir: lay.staging(), IDMap: st.IDMap, Log: r.log.With("env", env.Id),
	})
	if err != nil {
		return err
	}
	st.RepoName = filepath.Base(repo)
	st.ContentReady = true
	st.WorkspaceUser = "0:0" // Clone gives the tree to root inside
	return saveState(lay.state(), st)
}

// pullImage reads devcontainer.json (the image, and everything it asks),
// pulls the image, merges its metadata and prepares features.
func (r *Runner) pullImage(ctx context.Context, w *worker, env *covev1.Environment, lay layout, st *envState) error {
	cfg, warns, err := r.loadDevcontainer(env, filepath.Join(lay.workspace(), st.RepoName))
	if err != nil {
		return err
	}
	ref := env.GetSpec().GetDefaultImage()
	if ref == "" {
		ref = r.cfg.DefaultImage
	}
	if cfg != nil && cfg.Image != "" {
		ref = cfg.Image
	}
	var img *image.Image
	if b, berr := dockerBuild(cfg); berr != nil {
		return berr
	} else if b != nil {
		mark := func(msg string) { w.sub(&w.machine, subInProgress, msg) }
		mark("building " + b.Dockerfile)
		if img, err = r.buildImage(ctx, env, lay, st, cfg, b); err != nil {
			return err
		}
		ref = "built from " + b.Dockerfile
	} else {
		if ref == "" {
			return usererr.New("no image: the repository has no devcontainer.json naming one and no default image is configured")
		}
		if img, err = r.images.Pull(ctx, ref); err != nil {
			return err
		}
	}
	st.Image, st.ImageDigest, st.Layers, st.Env, st.User = ref, img.Digest, img.Layers, img.Config.Env, img.Config.User
	if err := r.applyDevcontainer(ctx, env, lay, st, cfg, warns, img); err != nil {
		return err
	}
	return saveState(lay.state(), st)
}

// dockerBuild is cfg's Dockerfile configuration, if any.
func dockerBuild(cfg *devcontainer.Config) (*devcontainer.DockerBuild, error) {
	if cfg == nil {
		return nil, nil
	}
	return cfg.DockerBuild()
}

func (r *Runner) rootfsConfig(lay layout, st *envState) image.RootfsConfig {
	cfg := image.RootfsConfig{UpperDir: lay.upper(), WorkDir: lay.work(), LowerDir: lay.lower(), Target: lay.rootfs()}
	if st != nil {
		cfg.Layers, cfg.IDMap = st.Layers, st.IDMap
	}
	return cfg
}

// mount prepares the root filesystem and, the first time, gives the
// workspace to the environment's user.
func (r *Runner) mount(ctx context.Context, lay layout, st *envState) error {
	if err := image.MountRootfs(ctx, r.rootfsConfig(lay, st)); err != nil {
		return err
	}
	uid, gid, err := lookupUser(lay.rootfs(), st.User)
	if err != nil {
		return err
	}
	want := fmt.Sprintf("%d:%d", uid, gid)
	if st.WorkspaceUser == want {
		return nil
	}
	if err := content.Chown(ctx, lay.workspace(), st.IDMap, uid, gid); err != nil {
		return fmt.Errorf("give workspace to %s: %w", want, err)
	}
	st.WorkspaceUser = want
	return saveState(lay.state(), st)
}

func (r *Runner) start(ctx context.Context, env *covev1.Environment, lay layout, st *envState) error {
	// The agent's socket directory belongs to root inside the environment.
	if err := os.MkdirAll(lay.run(), 0o700); err != nil {
		return err
	}
	if err := os.Chown(lay.run(), int(st.IDMap.HostID), int(st.IDMap.HostID)); err != nil {
		return err
	}
	_ = os.Remove(lay.socket())
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
		f, err := os.OpenFile(lay.hosts(), os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		if st.DC.Hostname != "" {
			fmt.Fprintf(f, "127.0.1.1\t%s\n", st.DC.Hostname)
		}
		for _, h := range st.DC.AddHosts {
			if host, ip, ok := strings.Cut(h, ":"); ok {
				fmt.Fprintf(f, "%s\t%s\n", ip, host)
			}
		}
		f.Close()
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
	keys := ssh.MarshalAuthorizedKey(r.agentKey.PublicKey())
	if err := os.WriteFile(filepath.Join(lay.etc(), "runner_keys"), keys, 0o644); err != nil {
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
			{Source: lay.run(), Destination: agentRunDir, Type: "bind", Options: []string{"bind"}},
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
	if st.DC != nil {
		if st.DC.MountTarget != "" {
			spec.Mounts = append(spec.Mounts, runtime.Mount{Source: filepath.Join(lay.workspace(), st.RepoName), Destination: st.DC.MountTarget, Type: "bind", Options: []string{"rbind"}})
		}
		for _, m := range st.DC.Mounts {
			opts := []string{"nosuid", "nodev"}
			if m.ReadOnly {
				opts = append(opts, "ro")
			}
			if m.Type == "tmpfs" {
				spec.Mounts = append(spec.Mounts, runtime.Mount{Source: "tmpfs", Destination: m.Target, Type: "tmpfs", Options: append(opts, "mode=1777")})
				continue
			}
			dir := volumeDir(lay, m)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if err := os.Chown(dir, int(st.IDMap.HostID), int(st.IDMap.HostID)); err != nil {
				return err
			}
			spec.Mounts = append(spec.Mounts, runtime.Mount{Source: dir, Destination: m.Target, Type: "bind", Options: append(opts, "rbind")})
		}
	}
	if st.DC != nil && st.DC.FeaturesPending {
		// Writable: install scripts chmod themselves. Per-environment scratch.
		spec.Mounts = append(spec.Mounts, runtime.Mount{Source: lay.features(), Destination: featuresDir, Type: "bind", Options: []string{"bind"}})
	}
	if err := r.rt.Start(ctx, spec); err != nil {
		return err
	}
	if !st.StartedOnce {
		st.StartedOnce = true
		return saveState(lay.state(), st)
	}
	return nil
}

// agentArgs is the agent's command line: PID 1 of the environment.
func agentArgs(user, workdir string, dc *dcState) []string {
	args := []string{agentBinary, "agent", "--socket", agentRunDir + "/agent.sock",
		"--authorized-keys", agentEtcDir + "/runner_keys", "--user", user, "--workdir", workdir,
		"--post-attach", agentEtcDir + "/post-attach.json"}
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

func (r *Runner) waitAgent(ctx context.Context, lay layout) error {
	deadline := time.Now().Add(agentTimeout)
	var err error
	// The agent usually listens within a few milliseconds of the start:
	// poll every millisecond for the first 50 ms, then back off.
	delay := time.Millisecond
	for time.Now().Before(deadline) {
		if _, serr := os.Stat(lay.socket()); serr != nil {
			err = serr
		} else if err = r.probeAgent(ctx, lay.socket()); err == nil {
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
	return usererr.Wrap(err, "the environment's agent did not start within %s: %s", agentTimeout, tail(filepath.Join(lay.runtime(), "console.log"), 400))
}

// remove deletes the environment's disk state and frees its uid range. It
// refuses to cross into anything still mounted (shared image layers).
func (r *Runner) remove(ctx context.Context, id string, lay layout, st *envState) error {
	if err := r.detachNetwork(ctx, id); err != nil {
		return err
	}
	if err := checkNoMounts(lay.dir); err != nil {
		return err
	}
	if err := os.RemoveAll(lay.dir); err != nil {
		return fmt.Errorf("remove %s: %w", lay.dir, err)
	}
	if st != nil {
		r.ranges.release(st.IDMap)
	}
	return nil
}

// reset discards the container's file system (the overlay upper and work
// dirs) so it is rebuilt from the image and devcontainer.json; the
// workspace stays. The new generation is recorded first: a crash after it
// just continues with a fresh build.
func (r *Runner) reset(lay layout, st *envState, generation int64) error {
	for _, d := range []string{lay.upper(), lay.work()} {
		if err := checkNoMounts(d); err != nil {
			return err
		}
	}
	st.BuiltGeneration = generation
	st.ImageDigest, st.Layers, st.DC = "", nil, nil
	if err := saveState(lay.state(), st); err != nil {
		return err
	}
	for _, d := range []string{lay.upper(), lay.work()} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("reset %s: %w", d, err)
		}
	}
	return nil
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no output)"
	}
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}
